#pragma once
/*
 * nf_metrics: counters, gauges and histograms rendered in the Prometheus text format.
 * Series are registered at start (or lazily) and live as long as the registry; the
 * returned pointers stay valid until nf_metrics_free. Single-threaded (one event loop).
 */
#include <stddef.h>
#include <stdint.h>

struct nf_metrics;
struct nf_counter;
struct nf_gauge;
struct nf_histogram;

int nf_metrics_new(struct nf_metrics **out);
void nf_metrics_free(struct nf_metrics *m);

/*
 * Returns the series for (name, labels), creating it on first use; the same arguments
 * return the same pointer. labels is NULL or Prometheus label text without braces, e.g.
 * "route=\"/api/jobs/{job_type}\",status=\"202\"". name and help are copied.
 */
struct nf_counter *nf_metrics_counter(struct nf_metrics *m, const char *name, const char *help,
                                      const char *labels);
struct nf_gauge *nf_metrics_gauge(struct nf_metrics *m, const char *name, const char *help,
                                  const char *labels);
/* bounds: ascending upper bounds (the +Inf bucket is implicit); copied. */
struct nf_histogram *nf_metrics_histogram(struct nf_metrics *m, const char *name, const char *help,
                                          const char *labels, const double *bounds, size_t nbounds);

void nf_metrics_counter_add(struct nf_counter *c, uint64_t n);
void nf_metrics_gauge_set(struct nf_gauge *g, double v);
void nf_metrics_histogram_observe(struct nf_histogram *h, double v);

/* Prometheus text exposition (# HELP, # TYPE, samples); heap string, *len set. */
char *nf_metrics_render(const struct nf_metrics *m, size_t *len);

/* Default latency buckets in seconds (0.001 .. 10). */
extern const double nf_metrics_latency_bounds[];
extern const size_t nf_metrics_latency_nbounds;
