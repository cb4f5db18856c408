/*
 * nf-gateway: parse --help, load the configuration, build the context, run the loop.
 * Everything else lives in gw_core (see gw.h for the map).
 */
#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "nf_app.h"
#include "nf_log.h"

int main(int argc, char **argv)
{
    struct gw_config cfg;
    struct nf_app app;
    struct gw_ctx *ctx = NULL;
    char err[512];
    int rc = 1;

    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            gw_config_usage(stdout);
            return 0;
        }
        fprintf(stderr, "nf-gateway: unknown argument %s (try --help)\n", argv[1]);
        return 2;
    }
    nf_log_init("gateway", NF_LOG_INFO);
    if (gw_config_load(&cfg, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        return 1;
    }
    /* the app's own grace period backs up gw_stop's bounded drain */
    if (nf_app_init(&app, "gateway", gw_stop, NULL, cfg.drain_ms + 2 * 5000) != 0)
        goto out_cfg;
    gw_config_log(&cfg);
    if (gw_new(&ctx, &cfg, &app) != 0)
        goto out_app;
    app.ctx = ctx; /* gw_stop's argument, known only now */
    rc = nf_app_run(&app);
    gw_free(ctx);
out_app:
    nf_app_free(&app);
out_cfg:
    gw_config_free(&cfg);
    return rc;
}
