/*
 * nf-auth: parse --help, load the configuration, build the context (migrations first),
 * run the loop. Everything else lives in auth_core (see auth.h for the map).
 */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "nf_app.h"
#include "nf_log.h"

int main(int argc, char **argv)
{
    struct auth_config cfg;
    struct nf_app app;
    struct auth_ctx *ctx = NULL;
    char err[512];
    int rc = 1;

    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            auth_config_usage(stdout);
            return 0;
        }
        fprintf(stderr, "nf-auth: unknown argument %s (try --help)\n", argv[1]);
        return 2;
    }
    nf_log_init("auth", NF_LOG_INFO);
    if (auth_config_load(&cfg, err, sizeof(err)) != 0) {
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        return 1;
    }
    /* the app's own grace period backs up auth_stop's bounded drain */
    if (nf_app_init(&app, "auth", auth_stop, NULL, cfg.drain_ms + 5000) != 0)
        goto out_cfg;
    auth_config_log(&cfg);
    if (auth_new(&ctx, &cfg, &app) != 0)
        goto out_app;
    app.ctx = ctx; /* auth_stop's argument, known only now */
    rc = nf_app_run(&app);
    auth_free(ctx);
out_app:
    nf_app_free(&app);
out_cfg:
    auth_config_free(&cfg);
    return rc;
}
