/*
 * nf_app: process start-up and graceful shutdown around the one event_base.
 *
 *   running --SIGTERM/SIGINT or nf_app_stop--> stopping: on_stop(ctx), grace timer armed
 *   stopping --nf_app_stop_done()-----------> done: loop breaks
 *   stopping --grace timer fires------------> done: loop breaks (warned)
 *   stopping --second signal----------------> done: loop breaks at once (warned)
 *
 * app->stopping holds the state: 0 running, STOP_PENDING, STOP_DONE.
 */
#include "nf_app.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "nf_crypto.h"
#include "nf_log.h"

#define STOP_PENDING 1
#define STOP_DONE 2

/* libevent's own warnings become JSON log lines instead of raw stderr text. */
static void on_libevent_log(int severity, const char *msg)
{
    enum nf_log_level level = NF_LOG_ERROR;

    if (severity == EVENT_LOG_DEBUG)
        level = NF_LOG_DEBUG;
    else if (severity == EVENT_LOG_MSG)
        level = NF_LOG_INFO;
    else if (severity == EVENT_LOG_WARN)
        level = NF_LOG_WARN;
    nf_log(level, "libevent", "%s", msg);
}

static void finish(struct nf_app *app)
{
    app->stopping = STOP_DONE;
    if (app->grace)
        evtimer_del(app->grace);
    event_base_loopbreak(app->base);
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    struct nf_app *app = arg;

    nf_log_warn("shutdown_grace_expired", "grace period of %d ms over, exiting", app->grace_ms);
    finish(app);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct nf_app *app = arg;

    if (app->stopping) {
        nf_log_warn("shutdown_forced", "second signal %d, exiting now", (int)sig);
        finish(app);
        return;
    }
    nf_log_info("shutdown_signal", "signal %d received", (int)sig);
    nf_app_stop(app);
}

int nf_app_init(struct nf_app *app, void (*on_stop)(void *ctx), void *ctx, int grace_ms)
{
    struct sigaction sa;

    memset(app, 0, sizeof(*app));
    app->on_stop = on_stop;
    app->ctx = ctx;
    app->grace_ms = grace_ms > 0 ? grace_ms : 0;

    event_set_log_callback(on_libevent_log);

    if (nf_crypto_init() != 0) {
        nf_log_error("crypto_init_failed", "libsodium initialisation failed");
        return -1;
    }

    /* A peer closing a socket must be an EPIPE error, not the end of the process. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        nf_log_error("signal_failed", "cannot ignore SIGPIPE");
        return -1;
    }

    app->base = event_base_new();
    if (!app->base) {
        nf_log_error("event_base_failed", "cannot create the event loop");
        goto err;
    }
    app->sig_term = evsignal_new(app->base, SIGTERM, on_signal, app);
    app->sig_int = evsignal_new(app->base, SIGINT, on_signal, app);
    app->grace = evtimer_new(app->base, on_grace, app);
    if (!app->sig_term || !app->sig_int || !app->grace) {
        nf_log_error("event_new_failed", "cannot create the signal events");
        goto err;
    }
    if (evsignal_add(app->sig_term, NULL) != 0 || evsignal_add(app->sig_int, NULL) != 0) {
        nf_log_error("signal_failed", "cannot watch SIGTERM and SIGINT");
        goto err;
    }
    return 0;

err:
    /* nf_app_free undoes exactly what was built: every pointer is NULL or valid. */
    nf_app_free(app);
    return -1;
}

int nf_app_run(struct nf_app *app)
{
    /* Stopped before the loop ran (a fatal start-up error): nothing to wait for. */
    if (app->stopping != STOP_DONE)
        event_base_dispatch(app->base);
    nf_log_info("stopped", "event loop stopped");
    return 0;
}

void nf_app_stop_done(struct nf_app *app)
{
    finish(app);
}

/* Idempotent: the first call calls on_stop and arms the grace timer; later calls do not. */
void nf_app_stop(struct nf_app *app)
{
    struct timeval tv;

    if (app->stopping)
        return;
    app->stopping = STOP_PENDING;
    nf_log_info("shutdown_started", "shutting down, grace %d ms", app->grace_ms);
    tv.tv_sec = app->grace_ms / 1000;
    tv.tv_usec = (suseconds_t)(app->grace_ms % 1000) * 1000;
    if (evtimer_add(app->grace, &tv) != 0)
        nf_log_error("shutdown_timer_failed", "cannot arm the grace timer");
    if (app->on_stop)
        app->on_stop(app->ctx); /* may call nf_app_stop_done at once */
}

/* Frees the events and the base; the struct itself belongs to the caller. */
void nf_app_free(struct nf_app *app)
{
    if (!app)
        return;
    if (app->grace)
        event_free(app->grace);
    if (app->sig_int)
        event_free(app->sig_int);
    if (app->sig_term)
        event_free(app->sig_term);
    if (app->base)
        event_base_free(app->base);
    app->grace = app->sig_int = app->sig_term = NULL;
    app->base = NULL;
}
