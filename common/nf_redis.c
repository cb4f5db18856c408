/*
 * nf_redis: hiredis 0.14 async client on libevent; the contract is in nf_redis.h.
 *
 *   nf_redis_cmd -> struct cmd (timer armed, in r->pending) -> redisAsyncCommand(privdata cmd)
 *
 *   finish(cmd, reply) fires the caller's callback, once, from whichever comes first:
 *     on_reply     hiredis answered (reply), or dropped the command (NULL: disconnect, free)
 *     on_timeout   the per-command timer (NULL)
 *     nf_redis_free                    (NULL)
 *   A struct cmd is freed only by on_reply: hiredis calls it exactly once for every command
 *   it accepted, so a reply arriving after a timeout meets a live, already finished cmd.
 *
 * Connection life:
 *
 *   start_connect --on_connect(OK)--> connected --(EOF, error)--> on_disconnect
 *        ^   |  on_connect(ERR), connect timeout, immediate error          |
 *        |   v                                                             |
 *      retry_ev (backoff 100 ms, doubling to 2 s) <------------------------+
 *
 * hiredis owns the redisAsyncContext once it reports a disconnect or a failed connect: we
 * forget it and never free it then. ac->data points back at the nf_redis and is cleared
 * when nf_redis_free lets the context go, so late hiredis callbacks find NULL.
 */
#include "nf_redis.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "nf_log.h"
#include "nf_mem.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MIN_MS 1000

struct nf_redis_script {
    struct nf_redis_script *next;
    char sha[41]; /* lowercase hex SHA-1 of lua */
    char *lua;    /* owned copy of the source */
};

struct cmd {
    struct nf_redis *r; /* NULL once finished */
    nf_redis_cb cb;     /* may be NULL */
    void *arg;
    struct event *timer;  /* NULL once finished */
    bool done;            /* the caller's callback has fired */
    LIST_ENTRY(cmd) link; /* in r->pending while r is set */
    /* EVALSHA only: the whole command, kept to send it again after NOSCRIPT */
    struct nf_redis_script *script;
    bool retried;
    int argc;
    char **argv; /* owned copies */
    size_t *lens;
};

struct nf_redis {
    struct event_base *base;
    char *host;
    int port;
    int timeout_ms;
    redisAsyncContext *ac; /* NULL while disconnected; owned until hiredis takes it back */
    bool connected;        /* on_connect(OK) seen and no disconnect since */
    bool freeing;
    int backoff_ms;           /* delay before the next reconnect */
    struct event *retry_ev;   /* reconnect timer */
    struct event *connect_ev; /* deadline of a connect in progress */
    LIST_HEAD(, cmd) pending; /* commands whose callback has not fired */
    struct nf_redis_script *scripts;
};

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    return tv;
}

static void *dup_bytes(const void *s, size_t len)
{
    char *p = nf_xcalloc(1, len + 1);
    if (len > 0)
        memcpy(p, s, len);
    return p;
}

/* ---- SHA-1 (FIPS 180-4), only to name scripts for EVALSHA ---- */

struct sha1 {
    uint32_t h[5];
    uint64_t bytes;
    uint8_t buf[64];
    size_t used;
};

static uint32_t rol32(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (size_t i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1_init(struct sha1 *s)
{
    static const uint32_t iv[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memset(s, 0, sizeof(*s));
    memcpy(s->h, iv, sizeof(iv));
}

static void sha1_update(struct sha1 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->bytes += len;
    while (len > 0) {
        size_t take = sizeof(s->buf) - s->used;
        if (take > len)
            take = len;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        len -= take;
        if (s->used == sizeof(s->buf)) {
            sha1_block(s->h, s->buf);
            s->used = 0;
        }
    }
}

static void sha1_hex(struct sha1 *s, char out[41])
{
    uint64_t bits = s->bytes * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha1_update(s, &pad, 1);
    while (s->used != 56)
        sha1_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(s, len, sizeof(len));
    for (size_t i = 0; i < 5; i++)
        snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- commands ---- */

static void pending_unlink(struct cmd *cmd)
{
    struct nf_redis *r = cmd->r;
    if (r == NULL)
        return;
    LIST_REMOVE(cmd, link);
    cmd->r = NULL;
}

/*
 * Fires the caller's callback unless it already fired. The caller's callback may free the
 * client or issue new commands; cmd itself stays alive (only on_reply frees it), but callers
 * of finish() other than on_reply must not touch cmd afterwards: a synchronous
 * redisAsyncFree inside the callback runs on_reply for it.
 */
static void finish(struct cmd *cmd, redisReply *reply)
{
    if (cmd->done)
        return;
    cmd->done = true;
    pending_unlink(cmd);
    if (cmd->timer) {
        event_free(cmd->timer);
        cmd->timer = NULL;
    }
    if (cmd->cb)
        cmd->cb(reply, cmd->arg);
}

static void cmd_free(struct cmd *cmd)
{
    if (cmd == NULL)
        return;
    if (cmd->timer)
        event_free(cmd->timer);
    for (int i = 0; i < cmd->argc; i++)
        free(cmd->argv[i]);
    free(cmd->argv);
    free(cmd->lens);
    free(cmd);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct cmd *cmd = arg;
    nf_log_kv(NF_LOG_DEBUG, "redis_cmd_timeout", "redis command timed out", NULL);
    finish(cmd, NULL); /* last use of cmd */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Sends the EVALSHA again behind a SCRIPT LOAD on the same connection (so in order). */
static int resend_eval(redisAsyncContext *ac, struct cmd *cmd)
{
    cmd->retried = true;
    if (redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %s", cmd->script->lua) != REDIS_OK)
        return -1;
    if (redisAsyncCommandArgv(ac, on_reply, cmd, cmd->argc, (const char **)cmd->argv, cmd->lens) !=
        REDIS_OK)
        return -1;
    return 0;
}

/* The one hiredis callback of every command: owns and frees cmd. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cmd *cmd = privdata;
    redisReply *rep = reply;

    if (!cmd->done && rep != NULL && rep->type == REDIS_REPLY_ERROR && cmd->script != NULL &&
        !cmd->retried && rep->str != NULL && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        if (resend_eval(ac, cmd) == 0)
            return; /* cmd now belongs to the resent EVALSHA */
        nf_log_kv(NF_LOG_WARN, "redis_script_reload_failed", "cannot resend script", NULL);
    }
    finish(cmd, rep);
    cmd_free(cmd);
}

/* Fails a command that could not be sent: the callback fires now, with NULL. */
static int fail_now(nf_redis_cb cb, void *arg)
{
    if (cb)
        cb(NULL, arg);
    return -1;
}

static bool can_send(const struct nf_redis *r)
{
    return r != NULL && !r->freeing && r->connected && r->ac != NULL &&
           !(r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

static struct cmd *cmd_new(struct nf_redis *r, nf_redis_cb cb, void *arg)
{
    struct cmd *cmd = nf_xcalloc(1, sizeof(*cmd));
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->timer = evtimer_new(r->base, on_timeout, cmd);
    if (cmd->timer == NULL)
        abort();
    return cmd;
}

/* Called once hiredis accepted cmd: from now on only on_reply frees it. */
static void cmd_start(struct nf_redis *r, struct cmd *cmd)
{
    struct timeval tv = ms_tv(r->timeout_ms);
    cmd->r = r;
    LIST_INSERT_HEAD(&r->pending, cmd, link);
    evtimer_add(cmd->timer, &tv);
}

int nf_redis_cmd(struct nf_redis *r, nf_redis_cb cb, void *arg, const char *fmt, ...)
{
    if (!can_send(r))
        return fail_now(cb, arg);

    struct cmd *cmd = cmd_new(r, cb, arg);
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->ac, on_reply, cmd, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        cmd_free(cmd);
        return fail_now(cb, arg);
    }
    cmd_start(r, cmd);
    return 0;
}

int nf_redis_cmd_argv(struct nf_redis *r, nf_redis_cb cb, void *arg, int argc,
                      const char *const *argv, const size_t *lens)
{
    if (argc <= 0 || argv == NULL || !can_send(r))
        return fail_now(cb, arg);

    struct cmd *cmd = cmd_new(r, cb, arg);
    if (redisAsyncCommandArgv(r->ac, on_reply, cmd, argc, (const char **)argv, lens) != REDIS_OK) {
        cmd_free(cmd);
        return fail_now(cb, arg);
    }
    cmd_start(r, cmd);
    return 0;
}

struct nf_redis_script *nf_redis_script_new(struct nf_redis *r, const char *lua)
{
    if (r == NULL || lua == NULL)
        return NULL;
    struct nf_redis_script *s = nf_xcalloc(1, sizeof(*s));
    struct sha1 ctx;
    sha1_init(&ctx);
    sha1_update(&ctx, lua, strlen(lua));
    sha1_hex(&ctx, s->sha);
    s->lua = nf_xstrdup(lua);
    s->next = r->scripts;
    r->scripts = s;
    return s;
}

int nf_redis_eval(struct nf_redis *r, struct nf_redis_script *s, nf_redis_cb cb, void *arg,
                  int nkeys, int argc, const char *const *argv, const size_t *lens)
{
    if (s == NULL || nkeys < 0 || argc < nkeys || (argc > 0 && argv == NULL) || !can_send(r))
        return fail_now(cb, arg);

    struct cmd *cmd = cmd_new(r, cb, arg);
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    cmd->script = s;
    cmd->argc = argc + 3;
    cmd->argv = nf_xcalloc((size_t)cmd->argc, sizeof(*cmd->argv));
    cmd->lens = nf_xcalloc((size_t)cmd->argc, sizeof(*cmd->lens));
    cmd->argv[0] = nf_xstrdup("EVALSHA");
    cmd->argv[1] = nf_xstrdup(s->sha);
    cmd->argv[2] = nf_xstrdup(nk);
    for (int i = 0; i < 3; i++)
        cmd->lens[i] = strlen(cmd->argv[i]);
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        cmd->argv[3 + i] = dup_bytes(argv[i], len);
        cmd->lens[3 + i] = len;
    }
    if (redisAsyncCommandArgv(r->ac, on_reply, cmd, cmd->argc, (const char **)cmd->argv,
                              cmd->lens) != REDIS_OK) {
        cmd_free(cmd);
        return fail_now(cb, arg);
    }
    cmd_start(r, cmd);
    return 0;
}

/* ---- connection ---- */

static void start_connect(struct nf_redis *r);

static void schedule_retry(struct nf_redis *r)
{
    if (r->freeing)
        return;
    struct timeval tv = ms_tv(r->backoff_ms);
    evtimer_add(r->retry_ev, &tv);
    r->backoff_ms *= 2;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    start_connect(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct nf_redis *r = ac->data;
    if (r == NULL)
        return;
    evtimer_del(r->connect_ev);
    if (status != REDIS_OK) {
        nf_log_kv(NF_LOG_WARN, "redis_connect_failed", "cannot connect to redis", "error",
                  ac->c.errstr, NULL);
        r->ac = NULL; /* hiredis frees it when this returns */
        schedule_retry(r);
        return;
    }
    r->connected = true;
    r->backoff_ms = BACKOFF_MIN_MS;
    redisEnableKeepAlive((redisContext *)&ac->c);
    nf_log_kv(NF_LOG_INFO, "redis_connected", "connected to redis", "host", r->host, NULL);
}

/* Runs after hiredis failed the pending commands with NULL; hiredis frees ac afterwards. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct nf_redis *r = ac->data;
    if (r == NULL)
        return;
    r->ac = NULL;
    r->connected = false;
    nf_log_kv(NF_LOG_WARN, "redis_disconnected", "lost connection to redis", "error",
              status == REDIS_OK ? NULL : ac->c.errstr, NULL);
    schedule_retry(r);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct nf_redis *r = arg;
    redisAsyncContext *ac = r->ac;
    if (ac == NULL || r->connected)
        return;
    nf_log_kv(NF_LOG_WARN, "redis_connect_failed", "redis connect timed out", NULL);
    ac->data = NULL;
    r->ac = NULL;
    redisAsyncFree(ac); /* not connected: no commands, no disconnect callback */
    schedule_retry(r);
}

static void start_connect(struct nf_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        schedule_retry(r);
        return;
    }
    if (ac->err) {
        nf_log_kv(NF_LOG_WARN, "redis_connect_failed", "cannot connect to redis", "error",
                  ac->c.errstr, NULL);
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;

    int ms = r->timeout_ms > CONNECT_TIMEOUT_MIN_MS ? r->timeout_ms : CONNECT_TIMEOUT_MIN_MS;
    struct timeval tv = ms_tv(ms);
    evtimer_add(r->connect_ev, &tv);
}

int nf_redis_new(struct nf_redis **out, struct event_base *base, const char *host, int port,
                 int timeout_ms)
{
    if (out == NULL || base == NULL || host == NULL || port <= 0 || port > 65535 || timeout_ms <= 0)
        return -1;

    struct nf_redis *r = nf_xcalloc(1, sizeof(*r));
    r->base = base;
    r->host = nf_xstrdup(host);
    r->port = port;
    r->timeout_ms = timeout_ms;
    LIST_INIT(&r->pending);
    r->backoff_ms = BACKOFF_MIN_MS;
    r->retry_ev = evtimer_new(base, on_retry, r);
    if (r->retry_ev == NULL)
        goto err_free;
    r->connect_ev = evtimer_new(base, on_connect_timeout, r);
    if (r->connect_ev == NULL)
        goto err_free;

    start_connect(r); /* failures only schedule a retry */
    *out = r;
    return 0;

err_free:
    nf_redis_free(r);
    return -1;
}

bool nf_redis_ready(const struct nf_redis *r)
{
    return can_send(r);
}

void nf_redis_free(struct nf_redis *r)
{
    if (r == NULL || r->freeing)
        return;
    r->freeing = true;

    /* The callbacks may issue commands: they fail at once since freeing is set. */
    while (!LIST_EMPTY(&r->pending))
        finish(LIST_FIRST(&r->pending), NULL);

    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        /* Runs on_reply (NULL) for every command in flight, which only frees them. From
         * inside a hiredis reply callback this is deferred by hiredis until it returns. */
        redisAsyncFree(ac);
    }
    if (r->retry_ev)
        event_free(r->retry_ev);
    if (r->connect_ev)
        event_free(r->connect_ev);
    while (r->scripts) {
        struct nf_redis_script *s = r->scripts;
        r->scripts = s->next;
        free(s->lua);
        free(s);
    }
    free(r->host);
    free(r);
}
