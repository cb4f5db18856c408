#pragma once
/*
 * nf_log: one JSON object per line on stderr:
 *   {"ts":"2026-11-28T21:03:52.123Z","level":"info","svc":"gateway","event":"http_listen",
 *    "msg":"listening","port":"8000"}
 * `event` is a stable snake_case name per message; `msg` is short, lowercase, no period.
 * Never pass a secret. The process-wide settings (service name, minimum level, output)
 * are the only logging state and are set once at start.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum nf_log_level { NF_LOG_DEBUG = 0, NF_LOG_INFO, NF_LOG_WARN, NF_LOG_ERROR };

/* svc is copied. Output defaults to stderr. */
void nf_log_init(const char *svc, enum nf_log_level min_level);
/* For tests: write to `out` instead of stderr (NULL restores stderr). */
void nf_log_set_output(FILE *out);
/* Parses "debug", "info", "warn", "error"; returns -1 on anything else. */
int nf_log_level_parse(const char *s, enum nf_log_level *out);

/* Message from a printf format. */
void nf_log(enum nf_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Message plus typed string fields: NULL-terminated (key, value) pairs of const char *;
 * a NULL value is written as JSON null. Keys must not be ts/level/svc/event/msg. */
void nf_log_kv(enum nf_log_level level, const char *event, const char *msg, ...)
    __attribute__((sentinel));
/* The same with a field list built at run time: kv holds npairs (key, value) pairs,
 * kv[2i] the key and kv[2i+1] the value (NULL -> null). Used by nf_cfg_log. */
void nf_log_kvs(enum nf_log_level level, const char *event, const char *msg, const char *const *kv,
                size_t npairs);

#define nf_log_debug(event, ...) nf_log(NF_LOG_DEBUG, event, __VA_ARGS__)
#define nf_log_info(event, ...) nf_log(NF_LOG_INFO, event, __VA_ARGS__)
#define nf_log_warn(event, ...) nf_log(NF_LOG_WARN, event, __VA_ARGS__)
#define nf_log_error(event, ...) nf_log(NF_LOG_ERROR, event, __VA_ARGS__)
