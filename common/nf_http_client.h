#pragma once
/*
 * nf_http_client: the internal HTTP client, for calls between services: keep-alive
 * connections to one host:port or to the replicas of a service (failover between them),
 * per-request timeouts.
 */
#include <event2/event.h>
#include <stddef.h>

struct evkeyvalq;
struct nf_http_client;

struct nf_http_resp {
    int status;       /* HTTP status, or 0 on connection error / timeout */
    const char *body; /* NUL-terminated; "" when empty; valid during the callback */
    size_t len;
    const char *error;               /* transport error text when status == 0, else NULL */
    const struct evkeyvalq *headers; /* answer headers (NULL when status == 0) */
};

/* Fires exactly once per request, also when the client is freed first (status 0). */
typedef void (*nf_http_client_cb)(const struct nf_http_resp *resp, void *arg);

#define NF_HTTP_CLIENT_MAX_ENDPOINTS 16

/* timeout_ms: default per-request timeout. max_conns: pool size per endpoint (requests
 * beyond it wait for a free connection). */
int nf_http_client_new(struct nf_http_client **out, struct event_base *base, const char *host,
                       int port, int timeout_ms, int max_conns);
/* The same over n (1..NF_HTTP_CLIENT_MAX_ENDPOINTS) replicas of one service, with
 * failover between them (see nf_http_client.c). */
int nf_http_client_new_multi(struct nf_http_client **out, struct event_base *base,
                             const char *const *hosts, const int *ports, size_t n, int timeout_ms,
                             int max_conns);
void nf_http_client_free(struct nf_http_client *cli);
/*
 * Sends a request. headers: NULL or a NULL-terminated array of name, value, name, value...
 * body may be NULL. Content-Type defaults to application/json when a body is given.
 * timeout_ms 0 uses the client default. Everything is copied. -1 if it cannot be queued
 * (cb is then not called).
 */
int nf_http_client_request(struct nf_http_client *cli, const char *method, const char *path,
                           const char *const *headers, const char *body, size_t len, int timeout_ms,
                           nf_http_client_cb cb, void *arg);
/* Header value from an answer, NULL when absent. */
const char *nf_http_resp_header(const struct nf_http_resp *resp, const char *name);
