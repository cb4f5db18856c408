#pragma once
/*
 * What service.c wires into the descriptor: the route handlers, the consumers of the two
 * topics and the sweep timer. Each module implementing them includes only bill.h and this
 * header, never service.c's descriptor.
 */
struct bill_ctx;
struct nf_http_req;
struct nf_kafka_msg;

/* routes_internal.c: GET /internal/summary, /internal/usage, /internal/jobs/{job_id}/cost */
void bill_internal_summary(struct nf_http_req *req, void *arg);
void bill_internal_usage(struct nf_http_req *req, void *arg);
void bill_internal_job_cost(struct nf_http_req *req, void *arg);

/* routes_budget.c: GET and PUT /internal/budget */
void bill_budget_get(struct nf_http_req *req, void *arg);
void bill_budget_put(struct nf_http_req *req, void *arg);

/* consume_usage.c: a forge.usage message joins the open batch (msg owned until done). */
void bill_usage_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg);
/* consume_events.c: a forge.jobs.events message (msg owned until done). */
void bill_events_handle(struct bill_ctx *ctx, struct nf_kafka_msg *msg);

/* sweep.c: the periodic pending sweep; start arms it, close frees it (NULL ok). */
int bill_sweep_start(struct bill_ctx *ctx);
void bill_sweep_close(struct bill_ctx *ctx);
