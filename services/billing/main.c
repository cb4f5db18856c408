/*
 * nf-billing: main() only wires the process frame to the service (bill.c).
 */
#include <stdio.h>
#include <string.h>

#include "bill.h"
#include "nf_app.h"
#include "nf_log.h"

int main(int argc, char **argv)
{
    struct bill_config cfg;
    struct bill_ctx *ctx = NULL;
    struct nf_app app;
    char err[512];
    int rc = 1;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        bill_config_usage(stdout);
        return 0;
    }
    if (bill_config_load(&cfg, err, sizeof(err)) < 0) {
        nf_log_init("billing", NF_LOG_INFO);
        nf_log_kv(NF_LOG_ERROR, "config_invalid", "invalid configuration", "error", err, NULL);
        return 2;
    }
    if (nf_app_init(&app, "billing", bill_stop, NULL, cfg.grace_ms) < 0) {
        bill_config_free(&cfg);
        return 1;
    }
    bill_config_log(&cfg);
    if (bill_new(&ctx, app.base, &app, &cfg) < 0) {
        bill_config_free(&cfg);
        goto out;
    }
    app.ctx = ctx; /* on_stop's argument, now that the service exists */
    rc = nf_app_run(&app);
    bill_free(ctx);
out:
    nf_app_free(&app);
    return rc;
}
