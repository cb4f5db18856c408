/*
 * The bottom of nf-worker: helpers every module of the agent shares. It calls nothing
 * above it: the agent's flow lives in api.c, job*.c and publish.c, the hooks in service.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>

#include "nf_http.h"
#include "nf_http_client.h"
#include "wk.h"

int wk_post(struct wk_ctx *ctx, struct nf_http_client *cli, const char *route, const char *token,
            cJSON *body, int timeout_ms, nf_http_client_cb cb, void *arg)
{
    char path[256];
    size_t n = strlen(token) + 8;
    char *auth = nf_xcalloc(1, n);
    char *text = nf_json_print(body);
    const char *headers[] = {"Authorization", auth, NULL};
    int rc;

    cJSON_Delete(body);
    snprintf(auth, n, "Bearer %s", token);
    snprintf(path, sizeof(path), "%s/api/workers/%s", ctx->set.api_prefix, route);
    rc =
        nf_http_client_request(cli, "POST", path, headers, text, strlen(text), timeout_ms, cb, arg);
    explicit_bzero(auth, n);
    free(auth);
    free(text);
    return rc;
}

void wk_event_free(struct event **ev)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
}

void wk_bev_free(struct bufferevent **bev)
{
    if (*bev != NULL) {
        bufferevent_free(*bev);
        *bev = NULL;
    }
}
