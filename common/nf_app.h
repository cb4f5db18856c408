#pragma once
/*
 * nf_app: the process frame shared by every binary: log and crypto init, one event_base,
 * SIGTERM/SIGINT handling and graceful shutdown.
 *
 *   nf_svc_main -> config, log -> nf_app_init -> service start -> nf_app_run
 *   SIGTERM -> on_stop(ctx) (stop accepting, flush Kafka, close consumers) -> the loop
 *   exits once the service calls nf_app_stop_done() or after the grace period.
 */
#include <event2/event.h>

struct nf_app {
    struct event_base *base;
    struct event *sig_term;
    struct event *sig_int;
    struct event *grace;        /* deadline for a graceful stop */
    void (*on_stop)(void *ctx); /* called once on the first signal */
    void *ctx;
    int grace_ms;
    int stopping;
};

/* Initialises libsodium, the base and signals (logging is set up before, by nf_svc from
 * its NF_LOG_LEVEL row); -1 on failure (logged). */
int nf_app_init(struct nf_app *app, void (*on_stop)(void *ctx), void *ctx, int grace_ms);
/* Runs the loop until stopped; returns 0. */
int nf_app_run(struct nf_app *app);
/* The service finished its shutdown work: leave the loop now. */
void nf_app_stop_done(struct nf_app *app);
/* Starts the shutdown as a signal would (for tests and fatal errors). */
void nf_app_stop(struct nf_app *app);
void nf_app_free(struct nf_app *app);
