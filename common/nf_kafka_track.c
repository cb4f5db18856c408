/*
 * nf_kafka_track: contiguous done-offset tracking per partition; see nf_kafka_track.h.
 *
 *   struct nf_kafka_track --parts--> part (attached) --entries--> entry <-> entry ...
 *                                    part (detached: not on the list, freed when empty)
 *
 * An entry stays on its part's list after it is done until every entry before it is done
 * too; only then is it popped and freed, and its offset + 1 becomes storable.
 */
#include "nf_kafka_track.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "nf_mem.h"

struct part {
    struct part *next; /* in t->parts while attached */
    char *topic;       /* owned */
    int32_t partition;
    struct nf_kafka_track *t; /* NULL once detached: revoked, reset or tracker gone */
    /* The entries in hand-out order; open counts those not done. */
    TAILQ_HEAD(entry_q, nf_kafka_track_entry) entries;
    size_t open;
};

struct nf_kafka_track_entry {
    struct part *part;
    TAILQ_ENTRY(nf_kafka_track_entry) link; /* in part->entries */
    int64_t offset;
    bool done;
};

struct nf_kafka_track {
    struct part *parts; /* attached partitions */
};

static void entry_unlink(struct nf_kafka_track_entry *e)
{
    TAILQ_REMOVE(&e->part->entries, e, link);
}

static void part_free(struct part *pt)
{
    free(pt->topic);
    free(pt);
}

/* Frees a detached part once no open entry refers to it. */
static void part_release(struct part *pt)
{
    if (pt->t == NULL && TAILQ_EMPTY(&pt->entries))
        part_free(pt);
}

/* Takes pt off its tracker's list; done entries are forgotten, open ones stay. */
static void part_detach(struct part *pt)
{
    struct nf_kafka_track *t = pt->t;
    struct nf_kafka_track_entry *e, *next;
    struct part **pp;

    for (pp = &t->parts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == pt) {
            *pp = pt->next;
            break;
        }
    }
    pt->next = NULL;
    pt->t = NULL;
    for (e = TAILQ_FIRST(&pt->entries); e != NULL; e = next) {
        next = TAILQ_NEXT(e, link);
        if (e->done) {
            entry_unlink(e);
            free(e);
        }
    }
    part_release(pt);
}

static struct part *part_find(const struct nf_kafka_track *t, const char *topic, int32_t partition)
{
    struct part *pt;

    for (pt = t->parts; pt != NULL; pt = pt->next)
        if (pt->partition == partition && strcmp(pt->topic, topic) == 0)
            return pt;
    return NULL;
}

static struct part *part_attach(struct nf_kafka_track *t, const char *topic, int32_t partition)
{
    struct part *pt = nf_xcalloc(1, sizeof(*pt));

    pt->topic = nf_xstrdup(topic);
    pt->partition = partition;
    pt->t = t;
    TAILQ_INIT(&pt->entries);
    pt->next = t->parts;
    t->parts = pt;
    return pt;
}

struct nf_kafka_track *nf_kafka_track_new(void)
{
    return nf_xcalloc(1, sizeof(struct nf_kafka_track));
}

void nf_kafka_track_free(struct nf_kafka_track *t)
{
    if (t == NULL)
        return;
    while (t->parts != NULL)
        part_detach(t->parts);
    free(t);
}

void nf_kafka_track_assign(struct nf_kafka_track *t, const char *topic, int32_t partition)
{
    struct part *pt = part_find(t, topic, partition);

    if (pt != NULL)
        part_detach(pt);
    part_attach(t, topic, partition);
}

void nf_kafka_track_revoke(struct nf_kafka_track *t, const char *topic, int32_t partition)
{
    struct part *pt = part_find(t, topic, partition);

    if (pt != NULL)
        part_detach(pt);
}

struct nf_kafka_track_entry *nf_kafka_track_add(struct nf_kafka_track *t, const char *topic,
                                                int32_t partition, int64_t offset)
{
    struct part *pt = part_find(t, topic, partition);
    struct nf_kafka_track_entry *e, *last = pt ? TAILQ_LAST(&pt->entries, entry_q) : NULL;

    if (last != NULL && offset <= last->offset) {
        part_detach(pt); /* offsets went back: never store past the old open ones */
        pt = NULL;
    }
    if (pt == NULL)
        pt = part_attach(t, topic, partition);

    e = nf_xcalloc(1, sizeof(*e));
    e->part = pt;
    e->offset = offset;
    TAILQ_INSERT_TAIL(&pt->entries, e, link);
    pt->open++;
    return e;
}

int64_t nf_kafka_track_done(struct nf_kafka_track_entry *e, const char **topic, int32_t *partition)
{
    struct part *pt = e->part;
    struct nf_kafka_track_entry *head, *next;
    int64_t store = -1;

    pt->open--;
    if (pt->t == NULL) {
        entry_unlink(e);
        free(e);
        part_release(pt);
        return -1;
    }
    e->done = true;
    for (head = TAILQ_FIRST(&pt->entries); head != NULL && head->done; head = next) {
        next = TAILQ_NEXT(head, link);
        store = head->offset + 1;
        TAILQ_REMOVE(&pt->entries, head, link);
        free(head);
    }
    if (store >= 0) {
        *topic = pt->topic;
        *partition = pt->partition;
    }
    return store;
}

void nf_kafka_track_drop(struct nf_kafka_track_entry *e)
{
    struct part *pt = e->part;

    pt->open--;
    entry_unlink(e);
    free(e);
    if (pt->t != NULL)
        part_detach(pt); /* a message given up on must not be skipped by later stores */
    else
        part_release(pt);
}

size_t nf_kafka_track_open(const struct nf_kafka_track *t, const char *topic, int32_t partition)
{
    const struct part *pt = part_find(t, topic, partition);

    return pt != NULL ? pt->open : 0;
}

size_t nf_kafka_track_parts(const struct nf_kafka_track *t)
{
    const struct part *pt;
    size_t n = 0;

    for (pt = t->parts; pt != NULL; pt = pt->next)
        n++;
    return n;
}
