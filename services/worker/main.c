/*
 * nf-worker: the worker agent. Everything lives in wk_core (wk.h); this file only wires
 * configuration, the process frame and the agent.
 */
#include <stdio.h>
#include <string.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_log.h"
#include "wk.h"

#define DEFAULT_GRACE_MS 90000
#define GRACE_SLACK_S 30 /* after drain + kill grace: final reports and Kafka flush */

int main(int argc, char **argv)
{
    struct nf_app app;
    struct wk_config cfg = {0};
    struct wk_settings set = {0};
    struct wk *ctx = NULL;
    char err[512];

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("nf-worker: runs jobs leased from the worker-manager\n\n");
        nf_cfg_usage(wk_cfg_opts, wk_cfg_nopts, stdout);
        return 0;
    }
    if (nf_app_init(&app, "worker", wk_on_stop, NULL, DEFAULT_GRACE_MS) < 0)
        return 1;
    if (wk_config_load(&cfg, &set, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        wk_config_free(&cfg, &set);
        nf_app_free(&app);
        return 1;
    }
    nf_cfg_log(wk_cfg_opts, wk_cfg_nopts, &cfg);
    app.grace_ms = (cfg.drain_timeout_s + cfg.kill_grace_s + GRACE_SLACK_S) * 1000;
    if (wk_new(&ctx, &app, &cfg, &set) < 0) {
        wk_config_free(&cfg, &set);
        nf_app_free(&app);
        return 1;
    }
    app.ctx = ctx;
    nf_app_run(&app);
    int code = ctx->exit_code;
    wk_free(ctx);
    nf_app_free(&app);
    return code;
}
