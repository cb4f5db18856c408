/*
 * nf_cfg: the option table reader. Each option is parsed from its environment variable
 * (or its default) straight into the service's config struct at opt->offset:
 *
 *   getenv(env) --unset--> def --NULL--> "is required"
 *        |                  |
 *        +------------------+--> parse by type --> check bounds --> store in the field
 *
 * Bounds: NF_CFG_INT and NF_CFG_I64 check [min, max] inclusive, except that min == max == 0
 * means "any value of the field's type". NF_CFG_STR checks the length: at least min, and at
 * most max when max > 0.
 * Error texts never echo the value of a secret option.
 */
#include "nf_cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nf_log.h"
#include "nf_mem.h"

#define BOOL_HELP "1/0, true/false, yes/no, on/off"

static void *field_at(void *cfg, const struct nf_cfg_opt *o)
{
    return (char *)cfg + o->offset;
}

static const void *cfield_at(const void *cfg, const struct nf_cfg_opt *o)
{
    return (const char *)cfg + o->offset;
}

/* Writes "ENV: <message>" into err (which may be NULL); returns -1. */
static int cfg_fail(char *err, size_t errlen, const struct nf_cfg_opt *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cfg_fail(char *err, size_t errlen, const struct nf_cfg_opt *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!err || errlen == 0)
        return -1;
    n = snprintf(err, errlen, "%s: ", o->env);
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, ap is started */
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* The value as shown in messages: "***" for secrets. */
static const char *shown(const struct nf_cfg_opt *o, const char *val)
{
    return o->secret ? "***" : val;
}

/* Strict decimal: optional sign, then digits only (no spaces, no "12x", no "0x10"). */
static bool is_decimal(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* A decimal within the option's bounds, clamped to [lo, hi] (the field's type). */
static int parse_num(const struct nf_cfg_opt *o, const char *val, long long lo, long long hi,
                     long long *out, char *err, size_t errlen)
{
    long long min = o->min, max = o->max, v;

    if (min == 0 && max == 0) {
        min = lo;
        max = hi;
    }
    /* The field's type bounds it, whatever the table says. */
    if (min < lo)
        min = lo;
    if (max > hi)
        max = hi;
    if (!is_decimal(val))
        return cfg_fail(err, errlen, o, "must be an integer (got \"%s\")", shown(o, val));
    errno = 0;
    v = strtoll(val, NULL, 10);
    if (errno == ERANGE || v < min || v > max)
        return cfg_fail(err, errlen, o, "must be between %lld and %lld (got %s)", min, max,
                        shown(o, val));
    *out = v;
    return 0;
}

static int parse_int(const struct nf_cfg_opt *o, const char *val, int *out, char *err,
                     size_t errlen)
{
    long long v = 0;
    int rc = parse_num(o, val, INT_MIN, INT_MAX, &v, err, errlen);

    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int parse_bool(const struct nf_cfg_opt *o, const char *val, bool *out, char *err,
                      size_t errlen)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(val, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(val, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return cfg_fail(err, errlen, o, "must be a boolean: " BOOL_HELP " (got \"%s\")", shown(o, val));
}

static int parse_level(const struct nf_cfg_opt *o, const char *val, int *out, char *err,
                       size_t errlen)
{
    enum nf_log_level level;

    if (nf_log_level_parse(val, &level) != 0)
        return cfg_fail(err, errlen, o, "must be debug, info, warn or error (got \"%s\")", val);
    *out = (int)level;
    return 0;
}

static int parse_addr(const struct nf_cfg_opt *o, const char *val, char **out, char *err,
                      size_t errlen)
{
    char *host = NULL;
    char *copy;
    int port;

    if (nf_cfg_split_addr(val, &host, &port) != 0)
        return cfg_fail(err, errlen, o, "must be host:port (got \"%s\")", shown(o, val));
    free(host);
    copy = nf_xstrdup(val);
    *out = copy;
    return 0;
}

static int parse_addrs(const struct nf_cfg_opt *o, const char *val, char **out, char *err,
                       size_t errlen)
{
    char *addrs[NF_CFG_MAX_ADDRS];
    int n = nf_cfg_split_addrs(val, addrs, NF_CFG_MAX_ADDRS);

    if (n < 0)
        return cfg_fail(err, errlen, o,
                        "must be host:port, or up to %d of them separated by commas (got \"%s\")",
                        NF_CFG_MAX_ADDRS, shown(o, val));
    for (int i = 0; i < n; i++)
        free(addrs[i]);
    *out = nf_xstrdup(val);
    return 0;
}

static int parse_str(const struct nf_cfg_opt *o, const char *val, char **out, char *err,
                     size_t errlen)
{
    size_t len = strlen(val);
    char *copy;

    if (o->min > 0 && len < (unsigned long long)o->min)
        return cfg_fail(err, errlen, o, "must be at least %lld characters long (got %zu)", o->min,
                        len);
    if (o->max > 0 && len > (unsigned long long)o->max)
        return cfg_fail(err, errlen, o, "must be at most %lld characters long (got %zu)", o->max,
                        len);
    copy = nf_xstrdup(val);
    *out = copy;
    return 0;
}

int nf_cfg_load(const struct nf_cfg_opt *opts, size_t n, void *cfg, char *err, size_t errlen)
{
    const struct nf_cfg_opt *o;
    const char *val;
    size_t i;
    int rc = 0;

    for (i = 0; i < n; i++) {
        o = &opts[i];
        val = getenv(o->env);
        if (!val)
            val = o->def;
        if (!val) {
            rc = cfg_fail(err, errlen, o, "is required but not set");
            break;
        }
        switch (o->type) {
        case NF_CFG_STR:
            rc = parse_str(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_INT:
            rc = parse_int(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_BOOL:
            rc = parse_bool(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_ADDR:
            rc = parse_addr(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_ADDRS:
            rc = parse_addrs(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_LEVEL:
            rc = parse_level(o, val, field_at(cfg, o), err, errlen);
            break;
        case NF_CFG_I64:
            rc = parse_num(o, val, LLONG_MIN, LLONG_MAX, field_at(cfg, o), err, errlen);
            break;
        default:
            rc = cfg_fail(err, errlen, o, "has an unknown option type");
        }
        if (rc != 0)
            break;
    }
    if (rc == 0)
        return 0;
    /* Undo: free only the strings this call stored (opts[0..i), before the failing one). */
    nf_cfg_free(opts, i, cfg);
    return -1;
}

void nf_cfg_free(const struct nf_cfg_opt *opts, size_t n, void *cfg)
{
    size_t i;
    char **s;

    if (!cfg)
        return;
    for (i = 0; i < n; i++) {
        if (opts[i].type != NF_CFG_STR && opts[i].type != NF_CFG_ADDR &&
            opts[i].type != NF_CFG_ADDRS)
            continue;
        s = field_at(cfg, &opts[i]);
        free(*s);
        *s = NULL;
    }
}

/* Writes an option's effective value as text into buf (valid until the next call). */
static const char *value_text(const struct nf_cfg_opt *o, const void *cfg, char *buf, size_t len)
{
    const char *s;

    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int level;

    switch (o->type) {
    case NF_CFG_STR:
    case NF_CFG_ADDR:
    case NF_CFG_ADDRS:
        s = *(char *const *)cfield_at(cfg, o);
        if (!s)
            return NULL;
        /* An empty secret shows as "" so an unset token is visible without revealing one. */
        return o->secret && s[0] ? "***" : s;
    case NF_CFG_INT:
        if (o->secret)
            return "***";
        snprintf(buf, len, "%d", *(const int *)cfield_at(cfg, o));
        return buf;
    case NF_CFG_BOOL:
        if (o->secret)
            return "***";
        return *(const bool *)cfield_at(cfg, o) ? "true" : "false";
    case NF_CFG_LEVEL:
        level = *(const int *)cfield_at(cfg, o);
        return level >= 0 && level <= 3 ? levels[level] : "?";
    case NF_CFG_I64:
        if (o->secret)
            return "***";
        snprintf(buf, len, "%lld", *(const long long *)cfield_at(cfg, o));
        return buf;
    }
    return NULL;
}

void nf_cfg_log(const struct nf_cfg_table *t, size_t ntables)
{
    const char **kv;
    char(*nums)[24];
    size_t i, j, n = 0, k = 0;

    for (i = 0; i < ntables; i++)
        n += t[i].n;
    if (n == 0)
        return;
    kv = nf_xcalloc(2 * n, sizeof(*kv));
    nums = nf_xcalloc(n, sizeof(*nums));
    for (i = 0; i < ntables; i++) {
        for (j = 0; j < t[i].n; j++, k++) {
            kv[2 * k] = t[i].opts[j].env;
            kv[2 * k + 1] = value_text(&t[i].opts[j], t[i].cfg, nums[k], sizeof(nums[k]));
        }
    }
    nf_log_kvs(NF_LOG_INFO, "config", "effective configuration", kv, n);
    free(nums);
    free(kv);
}

static const char *type_name(enum nf_cfg_type t)
{
    switch (t) {
    case NF_CFG_STR:
        return "string";
    case NF_CFG_INT:
        return "int";
    case NF_CFG_BOOL:
        return "bool";
    case NF_CFG_ADDR:
        return "host:port";
    case NF_CFG_ADDRS:
        return "host:port[,host:port...]";
    case NF_CFG_LEVEL:
        return "debug|info|warn|error";
    case NF_CFG_I64:
        return "int64";
    }
    return "?";
}

/*
 *   NF_GATEWAY_MAX_BODY  int, 1024..67108864, default 1048576
 *       largest request body in bytes
 */
static void usage_row(const struct nf_cfg_opt *o, FILE *out)
{
    fprintf(out, "  %-28s %s", o->env, type_name(o->type));
    if ((o->type == NF_CFG_INT || o->type == NF_CFG_I64) && !(o->min == 0 && o->max == 0))
        fprintf(out, ", %lld..%lld", o->min, o->max);
    if (o->type == NF_CFG_STR && o->min > 0)
        fprintf(out, ", at least %lld chars", o->min);
    if (o->type == NF_CFG_STR && o->max > 0)
        fprintf(out, ", at most %lld chars", o->max);
    if (o->type == NF_CFG_BOOL)
        fprintf(out, " (" BOOL_HELP ")");
    if (!o->def)
        fprintf(out, ", required");
    else if (o->secret)
        fprintf(out, ", default ***");
    else
        fprintf(out, ", default \"%s\"", o->def);
    if (o->secret)
        fprintf(out, ", secret");
    fprintf(out, "\n      %s\n", o->help ? o->help : "");
}

void nf_cfg_usage(const struct nf_cfg_table *t, size_t ntables, FILE *out)
{
    size_t i, j;

    fprintf(out, "Configuration (environment variables):\n");
    for (i = 0; i < ntables; i++)
        for (j = 0; j < t[i].n; j++)
            usage_row(&t[i].opts[j], out);
}

/* A host name or address: non-empty, printable, no spaces, slashes or brackets. */
static bool host_ok(const char *h, size_t len)
{
    size_t i;

    if (len == 0 || len > 253)
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];

        if (c <= ' ' || c >= 0x7f || c == '/' || c == '[' || c == ']' || c == '@')
            return false;
    }
    return true;
}

/* 1..65535, decimal digits only. */
static bool port_ok(const char *p, int *port)
{
    long v = 0;
    size_t i;

    if (p[0] == '\0' || strlen(p) > 5)
        return false;
    for (i = 0; p[i]; i++) {
        if (!isdigit((unsigned char)p[i]))
            return false;
        v = v * 10 + (p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *port = (int)v;
    return true;
}

/*
 * "host:port", or "[v6addr]:port" for IPv6 (the brackets are not part of *host). A bare
 * IPv6 address without brackets is ambiguous and refused. *host and *port are set only
 * on success; *host is a heap copy the caller frees.
 */
int nf_cfg_split_addr(const char *addr, char **host, int *port)
{
    const char *h, *colon, *close;
    size_t hlen;
    char *copy;
    int p;

    if (!addr)
        return -1;
    if (addr[0] == '[') {
        close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        if (!host_ok(h, hlen) || !memchr(h, ':', hlen))
            return -1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        h = addr;
        hlen = (size_t)(colon - addr);
        if (!host_ok(h, hlen) || memchr(h, ':', hlen))
            return -1;
    }
    if (!port_ok(colon + 1, &p))
        return -1;
    copy = nf_xstrndup(h, hlen);
    *host = copy;
    *port = p;
    return 0;
}

int nf_cfg_split_addrs(const char *list, char **addrs, int max)
{
    const char *p = list, *end;
    int n = 0;

    if (!list || max <= 0)
        return -1;
    for (;;) {
        char *one, *host = NULL;
        size_t len;
        int port;

        while (*p == ' ')
            p++;
        end = strchr(p, ',');
        len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        one = nf_xstrndup(p, len);
        if (n == max || nf_cfg_split_addr(one, &host, &port) != 0) {
            free(one);
            while (n > 0)
                free(addrs[--n]);
            return -1;
        }
        free(host);
        addrs[n++] = one;
        if (!end)
            return n;
        p = end + 1;
    }
}
