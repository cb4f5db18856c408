/*
 * The agent's outbox journal (see outbox.h). In memory: the pending messages' sequence
 * numbers and file offsets, in write order; the bodies stay on disk.
 *
 *   open --> claim outbox-<n>.log (flock) --> load its pending messages
 *        --> take over unlocked outbox-*.log of dead agents (copied in, emptied, removed)
 *   append --> (pending: compact first when the file is over its bound) --> write record
 *   done   --> write a done record --> nothing pending: truncate to empty
 */
#include "outbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nf_crypto.h"
#include "nf_mem.h"

#define MAGIC 0x424f464eu /* "NFOB" little-endian */
#define TYPE_MSG 1
#define TYPE_DONE 2
#define HDR 16
#define MAX_BODY (64u << 20)
#define MAX_FILES 64

struct entry {
    uint64_t seq;
    off_t off; /* of the record's header */
};

struct wk_outbox {
    int fd;
    char path[PATH_MAX];
    char dir[PATH_MAX];
    int64_t max_bytes;
    off_t size;         /* end of the last whole record */
    uint64_t next_seq;  /* the next message's */
    struct entry *ents; /* pending, by seq */
    size_t n, cap;
};

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        off += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        off += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Writes one record at ob->size; on failure the file is cut back (no torn record left). */
static int put_record(struct wk_outbox *ob, int type, const void *body, size_t len)
{
    unsigned char hdr[HDR] = {0};
    put32(hdr, MAGIC);
    hdr[4] = (unsigned char)type;
    put32(hdr + 8, (uint32_t)len);
    put32(hdr + 12, nf_crypto_crc32(body, len));
    if (write_all(ob->fd, hdr, HDR, ob->size) < 0 ||
        write_all(ob->fd, body, len, ob->size + HDR) < 0) {
        int e = errno;
        if (ftruncate(ob->fd, ob->size) < 0) { /* best effort: the CRC catches the rest */
        }
        errno = e != 0 ? e : EIO;
        return -1;
    }
    ob->size += (off_t)(HDR + len);
    return 0;
}

/* Reads the record at off: its type and body (malloc'd, NUL-terminated past len). 0, or
 * -1 when there is no whole valid record there (end of file, torn or foreign bytes). */
static int get_record(int fd, off_t off, int *type, unsigned char **body, uint32_t *len)
{
    unsigned char hdr[HDR];
    if (read_all(fd, hdr, HDR, off) < 0 || get32(hdr) != MAGIC)
        return -1;
    *type = hdr[4];
    *len = get32(hdr + 8);
    if ((*type != TYPE_MSG && *type != TYPE_DONE) || *len < 8 || *len > MAX_BODY)
        return -1;
    *body = nf_xmalloc((size_t)*len + 1);
    if (read_all(fd, *body, *len, off + HDR) < 0 ||
        nf_crypto_crc32(*body, *len) != get32(hdr + 12)) {
        free(*body);
        return -1;
    }
    (*body)[*len] = '\0';
    return 0;
}

/* Splits a message body into its three strings; -1 when it is not three NUL-ended ones. */
static int split(unsigned char *body, uint32_t len, const char **topic, const char **key,
                 const char **payload)
{
    const char *p = (const char *)body + 8, *end = (const char *)body + len;
    const char **parts[3] = {topic, key, payload};
    for (int i = 0; i < 3; i++) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        if (z == NULL)
            return -1;
        *parts[i] = p;
        p = z + 1;
    }
    return p == end ? 0 : -1;
}

static ssize_t find(const struct wk_outbox *ob, uint64_t seq)
{
    size_t lo = 0, hi = ob->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ob->ents[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ob->n && ob->ents[lo].seq == seq ? (ssize_t)lo : -1;
}

static void push(struct wk_outbox *ob, uint64_t seq, off_t off)
{
    if (ob->n == ob->cap) {
        ob->cap = ob->cap ? ob->cap * 2 : 64;
        ob->ents = nf_xrealloc(ob->ents, ob->cap * sizeof(*ob->ents));
    }
    ob->ents[ob->n++] = (struct entry){seq, off};
}

static void drop(struct wk_outbox *ob, uint64_t seq)
{
    ssize_t i = find(ob, seq);
    if (i < 0 || ob->ents == NULL)
        return;
    memmove(ob->ents + i, ob->ents + i + 1, (ob->n - (size_t)i - 1) * sizeof(*ob->ents));
    ob->n--;
}

/* Reads a journal into `into`: its pending messages (written, no done record) and the
 * sequence after the newest it holds; stops at the first invalid record. Answers the end of
 * the last whole record. */
static off_t scan(int fd, struct wk_outbox *into)
{
    off_t off = 0;
    int type;
    unsigned char *body;
    uint32_t len;
    while (get_record(fd, off, &type, &body, &len) == 0) {
        uint64_t seq = get64(body);
        const char *t, *k, *p;
        if (seq >= into->next_seq)
            into->next_seq = seq + 1;
        if (type == TYPE_MSG && split(body, len, &t, &k, &p) == 0) {
            if (into->n == 0 || seq > into->ents[into->n - 1].seq)
                push(into, seq, off);
        } else if (type == TYPE_DONE) {
            drop(into, seq);
        }
        free(body);
        off += (off_t)(HDR + len);
    }
    return off;
}

static uint64_t write_msg(struct wk_outbox *ob, const char *topic, const char *key,
                          const char *payload)
{
    size_t nt = strlen(topic) + 1, nk = strlen(key) + 1, np = strlen(payload) + 1;
    size_t len = 8 + nt + nk + np;
    if (len > MAX_BODY) {
        errno = EMSGSIZE;
        return 0;
    }
    unsigned char *body = nf_xmalloc(len);
    uint64_t seq = ob->next_seq;
    put64(body, seq);
    memcpy(body + 8, topic, nt);
    memcpy(body + 8 + nt, key, nk);
    memcpy(body + 8 + nt + nk, payload, np);
    off_t off = ob->size;
    int rc = put_record(ob, TYPE_MSG, body, len);
    free(body);
    if (rc < 0)
        return 0;
    ob->next_seq++;
    push(ob, seq, off);
    return seq;
}

/* Rewrites the pending messages into a new file renamed over ours. */
static int compact(struct wk_outbox *ob)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ob->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct wk_outbox next = {.fd = fd, .next_seq = ob->next_seq};
    int rc = 0;
    for (size_t i = 0; i < ob->n && rc == 0; i++) {
        int type;
        unsigned char *body;
        uint32_t len;
        if (get_record(ob->fd, ob->ents[i].off, &type, &body, &len) < 0) {
            errno = EIO;
            rc = -1;
            break;
        }
        off_t off = next.size;
        rc = put_record(&next, TYPE_MSG, body, len);
        if (rc == 0)
            push(&next, ob->ents[i].seq, off);
        free(body);
    }
    /* the lock moves with the file: take it on the new one before it replaces ours */
    if (rc == 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
        rc = -1;
    if (rc == 0 && rename(tmp, ob->path) < 0)
        rc = -1;
    if (rc < 0) {
        int e = errno;
        unlink(tmp);
        close(fd);
        free(next.ents);
        errno = e;
        return -1;
    }
    close(ob->fd);
    free(ob->ents);
    ob->fd = fd;
    ob->size = next.size;
    ob->ents = next.ents;
    ob->n = next.n;
    ob->cap = next.cap;
    return 0;
}

/* Copies the pending messages of a dead agent's journal (fd, locked) into ours. */
static int take_over(struct wk_outbox *ob, int fd)
{
    struct wk_outbox old = {.fd = fd};
    scan(fd, &old);
    int rc = 0;
    for (size_t i = 0; i < old.n && rc == 0; i++) {
        int type;
        unsigned char *body;
        uint32_t len;
        const char *t, *k, *p;
        if (get_record(fd, old.ents[i].off, &type, &body, &len) < 0)
            continue;
        if (split(body, len, &t, &k, &p) == 0 && write_msg(ob, t, k, p) == 0)
            rc = -1;
        free(body);
    }
    free(old.ents);
    return rc;
}

static int lock_file(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        errno = EWOULDBLOCK;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_nlink == 0) { /* removed by a peer that took it over */
        close(fd);
        errno = ENOENT;
        return -1;
    }
    return fd;
}

int wk_outbox_open(struct wk_outbox **out, const char *dir, int64_t max_bytes)
{
    struct wk_outbox *ob = nf_xcalloc(1, sizeof(*ob));
    char path[PATH_MAX];
    int mine = -1;

    ob->fd = -1;
    ob->max_bytes = max_bytes;
    ob->next_seq = 1;
    snprintf(ob->dir, sizeof(ob->dir), "%s", dir);
    for (int i = 0; i < MAX_FILES && ob->fd < 0; i++) {
        snprintf(path, sizeof(path), "%s/outbox-%d.log", dir, i);
        int fd = lock_file(path, O_RDWR | O_CREAT);
        if (fd < 0)
            continue;
        ob->fd = fd;
        mine = i;
        snprintf(ob->path, sizeof(ob->path), "%s", path);
        ob->size = scan(fd, ob); /* next_seq: after the newest sequence the file holds */
        if (ftruncate(fd, ob->size) < 0) {
            close(fd);
            free(ob->ents);
            free(ob);
            return -1;
        }
    }
    if (ob->fd < 0) {
        free(ob);
        errno = EAGAIN;
        return -1;
    }
    if (ob->n == 0 && ob->size > 0 && ftruncate(ob->fd, 0) == 0)
        ob->size = 0;
    for (int i = 0; i < MAX_FILES; i++) {
        if (i == mine)
            continue;
        snprintf(path, sizeof(path), "%s/outbox-%d.log", dir, i);
        int fd = lock_file(path, O_RDWR);
        if (fd < 0)
            continue;
        if (take_over(ob, fd) == 0 && ftruncate(fd, 0) == 0)
            unlink(path);
        close(fd);
    }
    *out = ob;
    return 0;
}

void wk_outbox_pending(struct wk_outbox *ob, wk_outbox_each_fn fn, void *arg)
{
    /* a copy: fn may append or mark done */
    size_t n = ob->n;
    struct entry *ents = nf_xmalloc((n ? n : 1) * sizeof(*ents));
    memcpy(ents, ob->ents, n * sizeof(*ents));
    for (size_t i = 0; i < n; i++) {
        int type;
        unsigned char *body;
        uint32_t len;
        const char *t, *k, *p;
        if (get_record(ob->fd, ents[i].off, &type, &body, &len) < 0)
            continue;
        if (split(body, len, &t, &k, &p) == 0)
            fn(ents[i].seq, t, k, p, arg);
        free(body);
    }
    free(ents);
}

uint64_t wk_outbox_append(struct wk_outbox *ob, const char *topic, const char *key,
                          const char *payload)
{
    int64_t need = HDR + 8 + (int64_t)(strlen(topic) + strlen(key) + strlen(payload) + 3);
    if (ob->size + need > ob->max_bytes) {
        if (ob->n == 0) {
            if (ftruncate(ob->fd, 0) == 0)
                ob->size = 0;
        } else if (compact(ob) < 0) {
            return 0;
        }
        if (ob->size + need > ob->max_bytes) {
            errno = ENOSPC;
            return 0;
        }
    }
    return write_msg(ob, topic, key, payload);
}

void wk_outbox_done(struct wk_outbox *ob, uint64_t seq)
{
    if (find(ob, seq) < 0)
        return;
    drop(ob, seq);
    if (ob->n == 0) {
        if (ftruncate(ob->fd, 0) == 0) {
            ob->size = 0;
            return;
        }
    }
    unsigned char body[8];
    put64(body, seq);
    if (put_record(ob, TYPE_DONE, body, sizeof(body)) < 0) {
        /* not recorded: the next agent publishes it again (consumers drop duplicates) */
    }
}

size_t wk_outbox_count(const struct wk_outbox *ob)
{
    return ob->n;
}

int64_t wk_outbox_bytes(const struct wk_outbox *ob)
{
    return ob->size;
}

void wk_outbox_close(struct wk_outbox *ob)
{
    if (ob == NULL)
        return;
    if (ob->n == 0)
        unlink(ob->path);
    close(ob->fd);
    free(ob->ents);
    free(ob);
}
