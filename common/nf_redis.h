#pragma once
/*
 * nf_redis: hiredis async client on libevent.
 *
 * - Every command has a timeout (hiredis 0.14 has none: a libevent timer per command);
 *   its callback fires exactly once, with NULL on timeout, disconnect or when the client
 *   is freed. A Redis error answer is passed as a REDIS_REPLY_ERROR reply, not NULL.
 * - Reconnects with backoff (100 ms doubling to 2 s) after a lost connection; commands
 *   issued while disconnected fail at once (NULL reply) so callers answer 503 quickly.
 * - Lua scripts are registered once, run with EVALSHA, and on NOSCRIPT are loaded again
 *   (SCRIPT LOAD) and retried transparently.
 * The reply is owned by hiredis and valid only during the callback.
 */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct nf_redis;
struct nf_redis_script;

typedef void (*nf_redis_cb)(redisReply *reply, void *arg);

int nf_redis_new(struct nf_redis **out, struct event_base *base, const char *host, int port,
                 int timeout_ms);
/* Fails every pending command (callbacks fire with NULL), disconnects, frees. NULL ok. */
void nf_redis_free(struct nf_redis *r);
bool nf_redis_ready(const struct nf_redis *r);

/* printf-style command as redisAsyncCommand ("%s" and "%b" with length). cb may be NULL.
 * Returns 0 when sent (cb fires later) or -1 when not connected (cb already fired with
 * NULL). */
int nf_redis_cmd(struct nf_redis *r, nf_redis_cb cb, void *arg, const char *fmt, ...);
/* argv form; lens may be NULL for NUL-terminated arguments. Same contract. */
int nf_redis_cmd_argv(struct nf_redis *r, nf_redis_cb cb, void *arg, int argc,
                      const char *const *argv, const size_t *lens);

/* Registers a script (source copied; its SHA-1 computed locally). Valid until free. */
struct nf_redis_script *nf_redis_script_new(struct nf_redis *r, const char *lua);
/* EVALSHA script nkeys keys... args...; argv holds the keys then the args. Same contract
 * as nf_redis_cmd_argv. */
int nf_redis_eval(struct nf_redis *r, struct nf_redis_script *s, nf_redis_cb cb, void *arg,
                  int nkeys, int argc, const char *const *argv, const size_t *lens);
