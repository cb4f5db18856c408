/*
 * forge.audit: what happened to credentials, for integrations (DESIGN §6). Events carry
 * ids, names, prefixes, outcomes and addresses - never a key, password or session token
 * (proto/events/audit.schema.json allows no other fields).
 *
 *   auth_audit -> CloudEvents envelope (source nf-auth, subject user id) -> produce
 *              -> delivery report: failure logged and counted
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "nf_event.h"
#include "nf_json.h"
#include "nf_kafka.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "nf_metrics.h"

struct audit_op {
    struct auth_ctx *ctx;
    char type[48];
};

static void delivered(int err, const char *errstr, void *arg)
{
    struct audit_op *op = arg;

    if (err != 0) {
        nf_log_kv(NF_LOG_WARN, "audit_lost", "audit event not delivered", "type", op->type, "error",
                  errstr, NULL);
        auth_backend_error(op->ctx, AUTH_BACKEND_KAFKA);
    }
    free(op);
}

void auth_audit(struct auth_ctx *ctx, const char *what, const char *user_id, cJSON *data)
{
    struct audit_op *op;
    cJSON *ev;
    char *payload;

    op = nf_xcalloc(1, sizeof(*op));
    op->ctx = ctx;
    snprintf(op->type, sizeof(op->type), "forge.auth.%s", what);
    ev = nf_event_new(op->type, "nf-auth", user_id, NULL, data); /* data consumed */
    payload = nf_json_print(ev);
    cJSON_Delete(ev);
    if (ctx->closing || nf_kafka_produce(ctx->producer, NF_TOPIC_AUDIT, user_id, payload,
                                         strlen(payload), delivered, op) != 0) {
        nf_log_kv(NF_LOG_WARN, "audit_lost", "audit event not queued", "type", op->type, NULL);
        auth_backend_error(ctx, AUTH_BACKEND_KAFKA);
        free(op);
    }
    free(payload);
}
