/*
 * nf_metrics: a small registry of metric families, each with its labelled series, kept in
 * registration order so /metrics output is stable:
 *
 *   nf_metrics -> family "http_requests_total" (counter, help) -> series {labels} -> ...
 *              -> family "job_latency_seconds" (histogram)     -> series {labels} -> ...
 *
 * Rendering writes # HELP and # TYPE once per family, then every series. Histograms keep
 * per-bucket counts and make them cumulative when rendered. Lookups are linear: a service
 * has tens of families and at most a few hundred series.
 */
#include "nf_metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_log.h"
#include "nf_mem.h"

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One labelled time series; the public types below embed it as their first member. */
struct series {
    struct series *next;
    char *labels; /* label text without braces; "" when unlabelled */
};

struct nf_counter {
    struct series s;
    uint64_t value;
};

struct nf_gauge {
    struct series s;
    double value;
};

struct nf_histogram {
    struct series s;
    double *bounds;   /* nbounds ascending upper bounds; +Inf is implicit */
    uint64_t *counts; /* nbounds + 1 per-bucket (not cumulative) counts; last is +Inf */
    size_t nbounds;
    double sum;
    uint64_t count;
};

struct family {
    struct family *next;
    char *name;
    char *help;
    enum kind kind;
    struct series *first, *last;
};

struct nf_metrics {
    struct family *first, *last;
};

const double nf_metrics_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10};
const size_t nf_metrics_latency_nbounds =
    sizeof(nf_metrics_latency_bounds) / sizeof(nf_metrics_latency_bounds[0]);

int nf_metrics_new(struct nf_metrics **out)
{
    *out = nf_xcalloc(1, sizeof(**out));
    return 0;
}

static void series_free(enum kind kind, struct series *s)
{
    struct nf_histogram *h;

    free(s->labels);
    if (kind == KIND_HISTOGRAM) {
        h = (struct nf_histogram *)s;
        free(h->bounds);
        free(h->counts);
    }
    free(s);
}

void nf_metrics_free(struct nf_metrics *m)
{
    struct family *f, *fnext;
    struct series *s, *snext;

    if (!m)
        return;
    for (f = m->first; f; f = fnext) {
        fnext = f->next;
        for (s = f->first; s; s = snext) {
            snext = s->next;
            series_free(f->kind, s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    free(m);
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool name_ok(const char *name)
{
    const char *p;

    if (!name || !*name || (*name >= '0' && *name <= '9'))
        return false;
    for (p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == ':'))
            return false;
    }
    return true;
}

/*
 * Finds the family `name`, creating it when new. NULL (logged) when the name is invalid
 * or already registered with another type: a programmer error that must not take the
 * process down, so the add/set/observe functions accept NULL series.
 */
static struct family *family_get(struct nf_metrics *m, const char *name, const char *help,
                                 enum kind kind)
{
    struct family *f;

    if (!name_ok(name)) {
        nf_log_error("metrics_bad_name", "invalid metric name \"%s\"", name ? name : "");
        return NULL;
    }
    for (f = m->first; f; f = f->next) {
        if (strcmp(f->name, name) != 0)
            continue;
        if (f->kind != kind) {
            nf_log_error("metrics_type_conflict", "metric %s is a %s, not a %s", name,
                         kind_names[f->kind], kind_names[kind]);
            return NULL;
        }
        return f;
    }
    f = nf_xcalloc(1, sizeof(*f));
    f->name = nf_xstrdup(name);
    f->help = nf_xstrdup(help ? help : "");
    f->kind = kind;
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

static struct series *series_find(const struct family *f, const char *labels)
{
    struct series *s;

    for (s = f->first; s; s = s->next)
        if (strcmp(s->labels, labels ? labels : "") == 0)
            return s;
    return NULL;
}

/* Links s (zeroed, allocated by the caller) as the family's newest series. */
static void series_add(struct family *f, struct series *s, const char *labels)
{
    s->labels = nf_xstrdup(labels ? labels : "");
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
}

/*
 * The series `labels` of the family `name` (family_get: NULL on a bad name or type),
 * created zeroed when new: size bytes of the public type that embeds struct series first.
 * *created (may be NULL) says whether it is new.
 */
static struct series *series_get(struct nf_metrics *m, const char *name, const char *help,
                                 enum kind kind, const char *labels, size_t size, bool *created)
{
    struct family *f = family_get(m, name, help, kind);
    struct series *s = f ? series_find(f, labels) : NULL;
    bool fresh = f && !s;

    if (fresh) {
        s = nf_xcalloc(1, size);
        series_add(f, s, labels);
    }
    if (created)
        *created = fresh;
    return s;
}

struct nf_counter *nf_metrics_counter(struct nf_metrics *m, const char *name, const char *help,
                                      const char *labels)
{
    return (struct nf_counter *)series_get(m, name, help, KIND_COUNTER, labels,
                                           sizeof(struct nf_counter), NULL);
}

struct nf_gauge *nf_metrics_gauge(struct nf_metrics *m, const char *name, const char *help,
                                  const char *labels)
{
    return (struct nf_gauge *)series_get(m, name, help, KIND_GAUGE, labels, sizeof(struct nf_gauge),
                                         NULL);
}

/* Bounds must be finite and strictly ascending. */
static bool bounds_ok(const double *bounds, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return false;
    }
    return true;
}

/* An existing series keeps the bounds it was created with. */
struct nf_histogram *nf_metrics_histogram(struct nf_metrics *m, const char *name, const char *help,
                                          const char *labels, const double *bounds, size_t nbounds)
{
    struct nf_histogram *h;
    bool created;

    if (!bounds_ok(bounds, nbounds)) {
        nf_log_error("metrics_bad_bounds", "histogram %s: bounds must ascend", name);
        return NULL;
    }
    h = (struct nf_histogram *)series_get(m, name, help, KIND_HISTOGRAM, labels,
                                          sizeof(struct nf_histogram), &created);
    if (created) {
        h->nbounds = nbounds;
        h->bounds = nf_xcalloc(nbounds ? nbounds : 1, sizeof(double));
        if (nbounds)
            memcpy(h->bounds, bounds, nbounds * sizeof(double));
        h->counts = nf_xcalloc(nbounds + 1, sizeof(uint64_t));
    }
    return h;
}

void nf_metrics_counter_add(struct nf_counter *c, uint64_t n)
{
    if (c)
        c->value += n;
}

void nf_metrics_gauge_set(struct nf_gauge *g, double v)
{
    if (g)
        g->value = v;
}

/* v goes to the first bucket whose bound is >= v (le = "less or equal"). NaN is ignored. */
void nf_metrics_histogram_observe(struct nf_histogram *h, double v)
{
    size_t i;

    if (!h || isnan(v))
        return;
    i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

/* Shortest decimal text that reads back as the same double; +Inf, -Inf, NaN as Go does. */
static void fmt_double(double v, char *buf, size_t len)
{
    int prec;

    if (isnan(v)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (prec = 1; prec < 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
    snprintf(buf, len, "%.17g", v);
}

/* HELP text escapes backslash and newline. */
static void put_help(FILE *out, const char *help)
{
    for (; *help; help++) {
        if (*help == '\\')
            fputs("\\\\", out);
        else if (*help == '\n')
            fputs("\\n", out);
        else
            fputc(*help, out);
    }
}

/* "{labels}" or nothing; with extra (e.g. le="0.1") merged in after the labels. */
static void put_labels(FILE *out, const char *labels, const char *extra)
{
    bool has = labels[0] != '\0';

    if (!has && !extra)
        return;
    fprintf(out, "{%s%s%s}", labels, has && extra ? "," : "", extra ? extra : "");
}

static void render_histogram(FILE *out, const char *name, const struct nf_histogram *h)
{
    char num[40], le[64];
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i <= h->nbounds; i++) {
        cum += h->counts[i];
        if (i < h->nbounds) {
            fmt_double(h->bounds[i], num, sizeof(num));
            snprintf(le, sizeof(le), "le=\"%s\"", num);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        fprintf(out, "%s_bucket", name);
        put_labels(out, h->s.labels, le);
        fprintf(out, " %llu\n", (unsigned long long)cum);
    }
    fmt_double(h->sum, num, sizeof(num));
    fprintf(out, "%s_sum", name);
    put_labels(out, h->s.labels, NULL);
    fprintf(out, " %s\n", num);
    fprintf(out, "%s_count", name);
    put_labels(out, h->s.labels, NULL);
    fprintf(out, " %llu\n", (unsigned long long)h->count);
}

char *nf_metrics_render(const struct nf_metrics *m, size_t *len)
{
    const struct family *f;
    const struct series *s;
    char *buf = NULL, num[40];
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);

    if (!out)
        abort();
    for (f = m ? m->first : NULL; f; f = f->next) {
        fprintf(out, "# HELP %s ", f->name);
        put_help(out, f->help);
        fprintf(out, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
        for (s = f->first; s; s = s->next) {
            switch (f->kind) {
            case KIND_COUNTER:
                fputs(f->name, out);
                put_labels(out, s->labels, NULL);
                fprintf(out, " %llu\n", (unsigned long long)((const struct nf_counter *)s)->value);
                break;
            case KIND_GAUGE:
                fmt_double(((const struct nf_gauge *)s)->value, num, sizeof(num));
                fputs(f->name, out);
                put_labels(out, s->labels, NULL);
                fprintf(out, " %s\n", num);
                break;
            case KIND_HISTOGRAM:
                render_histogram(out, f->name, (const struct nf_histogram *)s);
                break;
            }
        }
    }
    if (fclose(out) != 0 || !buf)
        abort();
    if (len)
        *len = size;
    return buf;
}
