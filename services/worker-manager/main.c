/*
 * nf-worker-manager: leases queued jobs to worker agents. Everything lives in wm_core
 * (wm.h); this file only wires configuration, the process frame and the service.
 */
#include <stdio.h>
#include <string.h>

#include "nf_app.h"
#include "nf_cfg.h"
#include "nf_log.h"
#include "wm.h"

#define GRACE_MS 15000

int main(int argc, char **argv)
{
    struct nf_app app;
    struct wm_config cfg = {0};
    struct wm *ctx = NULL;
    char err[512];

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("nf-worker-manager: leases queued jobs to worker agents\n\n");
        nf_cfg_usage(wm_cfg_opts, wm_cfg_nopts, stdout);
        return 0;
    }
    if (nf_app_init(&app, "worker-manager", wm_on_stop, NULL, GRACE_MS) < 0)
        return 1;
    if (wm_config_load(&cfg, err, sizeof(err)) < 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        wm_config_free(&cfg);
        nf_app_free(&app);
        return 1;
    }
    nf_cfg_log(wm_cfg_opts, wm_cfg_nopts, &cfg);
    if (wm_new(&ctx, &app, &cfg) < 0) {
        wm_config_free(&cfg);
        nf_app_free(&app);
        return 1;
    }
    app.ctx = ctx;
    nf_app_run(&app);
    wm_free(ctx);
    nf_app_free(&app);
    return 0;
}
