#pragma once
/*
 * nf-auth's middle layer: the route handlers that service.c lists in its route table, and
 * the start/close hooks of the modules that hold state of their own. Each handler is an
 * nf_http_handler whose argument is the struct auth_ctx. These modules include auth.h only.
 */
struct auth_ctx;
struct nf_http_req;

/* ---- routes_internal.c: called by the gateway on a cache miss and by ./forge up ---- */

void auth_internal_verify_key(struct nf_http_req *req, void *arg); /* POST /internal/keys/verify */
void auth_internal_verify_session(struct nf_http_req *req,
                                  void *arg);                     /* POST .../sessions/verify */
void auth_internal_bootstrap(struct nf_http_req *req, void *arg); /* POST /internal/bootstrap */

/* ---- routes_account.c: /api/auth/register, login, logout, me -------------------------- */

void auth_account_register(struct nf_http_req *req, void *arg);
void auth_account_login(struct nf_http_req *req, void *arg);
void auth_account_logout(struct nf_http_req *req, void *arg);
void auth_account_me(struct nf_http_req *req, void *arg);
/* Registers the Redis scripts of the login and registration limiters (start). -1 on
 * failure. */
int auth_account_start(struct auth_ctx *ctx);
/* Answers the failed logins still held back (close, before the server goes). */
void auth_account_close(struct auth_ctx *ctx);

/* ---- routes_keys.c: /api/auth/api-keys ------------------------------------------------ */

void auth_apikeys_create(struct nf_http_req *req, void *arg); /* POST */
void auth_apikeys_list(struct nf_http_req *req, void *arg);   /* GET */
void auth_apikeys_revoke(struct nf_http_req *req, void *arg); /* DELETE .../{key_id} */

/* ---- usage.c: last_used_at batches and the session cleanup ---------------------------- */

/* Starts the timer that moves auth:used into api_keys.last_used_at and, every 10 minutes,
 * deletes expired sessions (start). -1 on failure. */
int auth_usage_start(struct auth_ctx *ctx);
/* Ends the timer (close); a flush in flight finishes or fails with its backend. */
void auth_usage_close(struct auth_ctx *ctx);
