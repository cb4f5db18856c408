/*
 * nf_log: JSON lines logging. Each call formats the whole line in memory and writes it
 * with one fwrite, so lines from several threads (librdkafka's log callback) never
 * interleave. The three settings below are the only logging state of the process; they
 * are set once at start and only read afterwards.
 */
#include "nf_log.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "nf_mem.h"
#include "nf_str.h"

static char log_svc[64] = "nf";
static enum nf_log_level log_min = NF_LOG_INFO;
static FILE *log_out; /* NULL means stderr */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* A growable line buffer; out of memory aborts. */
struct line {
    char *p;
    size_t len, cap;
};

static void line_reserve(struct line *l, size_t more)
{
    size_t cap;

    if (l->len + more + 1 <= l->cap)
        return;
    cap = l->cap ? l->cap : 256;
    while (cap < l->len + more + 1)
        cap *= 2;
    l->p = nf_xrealloc(l->p, cap);
    l->cap = cap;
}

static void line_put(struct line *l, const char *s, size_t n)
{
    line_reserve(l, n);
    memcpy(l->p + l->len, s, n);
    l->len += n;
    l->p[l->len] = '\0';
}

static void line_puts(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

/*
 * Appends s as a quoted JSON string: quotes, backslashes and control characters are
 * escaped, and bytes that are not valid UTF-8 become U+FFFD so the line always parses.
 */
static void line_json_str(struct line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, run;
    char esc[8];

    line_put(l, "\"", 1);
    while (i < n) {
        unsigned char c = p[i];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            line_put(l, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n':
                line_put(l, "\\n", 2);
                break;
            case '\r':
                line_put(l, "\\r", 2);
                break;
            case '\t':
                line_put(l, "\\t", 2);
                break;
            case '\b':
                line_put(l, "\\b", 2);
                break;
            case '\f':
                line_put(l, "\\f", 2);
                break;
            default:
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                line_put(l, esc, 6);
            }
            i++;
        } else if ((run = nf_utf8_seq(p + i, n - i, NULL)) > 0) {
            line_put(l, (const char *)p + i, run);
            i += run;
        } else {
            line_put(l, "\\ufffd", 6);
            i++;
        }
    }
    line_put(l, "\"", 1);
}

/* Appends `,"key":value` with the value as a JSON string, or null when val is NULL. */
static void line_field(struct line *l, const char *key, const char *val)
{
    line_put(l, ",", 1);
    line_json_str(l, key);
    line_put(l, ":", 1);
    if (val)
        line_json_str(l, val);
    else
        line_put(l, "null", 4);
}

/* Starts a line with ts, level, svc, event and msg. */
static void line_begin(struct line *l, enum nf_log_level level, const char *event, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    char buf[64];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
    line_puts(l, "{\"ts\":\"");
    line_puts(l, buf);
    line_puts(l, "\",\"level\":\"");
    line_puts(l, level_names[level]);
    line_puts(l, "\"");
    line_field(l, "svc", log_svc);
    line_field(l, "event", event ? event : "log");
    line_field(l, "msg", msg ? msg : "");
}

/* Ends the line and writes it in one piece; frees the buffer. */
static void line_end(struct line *l)
{
    FILE *out = log_out ? log_out : stderr;

    line_put(l, "}\n", 2);
    fwrite(l->p, 1, l->len, out);
    fflush(out);
    free(l->p);
    l->p = NULL;
    l->len = l->cap = 0;
}

static bool level_enabled(enum nf_log_level level)
{
    return (int)level >= (int)log_min && (int)level <= (int)NF_LOG_ERROR;
}

void nf_log_init(const char *svc, enum nf_log_level min_level)
{
    snprintf(log_svc, sizeof(log_svc), "%s", svc ? svc : "nf");
    log_min = min_level;
}

void nf_log_set_output(FILE *out)
{
    log_out = out;
}

int nf_log_level_parse(const char *s, enum nf_log_level *out)
{
    size_t i;

    if (!s)
        return -1;
    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum nf_log_level)i;
            return 0;
        }
    }
    return -1;
}

void nf_log(enum nf_log_level level, const char *event, const char *fmt, ...)
{
    struct line l = {0};
    char small[512], *msg = small;
    va_list ap;
    int n;

    if (!level_enabled(level))
        return;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        small[0] = '\0';
    } else if ((size_t)n >= sizeof(small)) {
        /* Too long for the stack buffer: format again into the heap. */
        msg = nf_xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    line_begin(&l, level, event, msg);
    line_end(&l);
    if (msg != small)
        free(msg);
}

void nf_log_kv(enum nf_log_level level, const char *event, const char *msg, ...)
{
    struct line l = {0};
    const char *key, *val;
    va_list ap;

    if (!level_enabled(level))
        return;
    line_begin(&l, level, event, msg);
    va_start(ap, msg);
    while ((key = va_arg(ap, const char *)) != NULL) {
        val = va_arg(ap, const char *);
        line_field(&l, key, val);
    }
    va_end(ap);
    line_end(&l);
}

void nf_log_kvs(enum nf_log_level level, const char *event, const char *msg, const char *const *kv,
                size_t npairs)
{
    struct line l = {0};
    size_t i;

    if (!level_enabled(level))
        return;
    line_begin(&l, level, event, msg);
    for (i = 0; i < npairs; i++)
        line_field(&l, kv[2 * i], kv[2 * i + 1]);
    line_end(&l);
}
