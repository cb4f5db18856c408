#pragma once
/*
 * nf_pg: libpq, asynchronous, on the libevent loop.
 *
 * One nf_pg is a small pool of connections (PQconnectStartParams/PQconnectPoll; the
 * socket is re-read after every step). Queries queue FIFO and run on the first idle
 * connection with PQsendQueryParams (text parameters, text results). A lost connection
 * is re-established with backoff; queries that wait longer than timeout_ms, or that were
 * running on a connection that died, fail (callback with res NULL and err set) - they
 * are never silently retried, since the caller knows whether retrying is safe.
 *
 * The callback fires exactly once. `res` is owned by nf_pg and cleared after the callback.
 */
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct nf_pg;

/* res: the (last) statement's result, NULL on failure; err: NULL on success, else a
 * message (SQLSTATE in pgcode, "" if none). A statement that fails in Postgres (e.g.
 * constraint violation) gives res NULL, err set, pgcode = its SQLSTATE. */
typedef void (*nf_pg_cb)(const PGresult *res, const char *err, const char *pgcode, void *arg);

struct nf_pg_stmt {
    const char *sql;
    int nparams;
    const char *const *params; /* NULL entries are SQL NULL */
};

/* conninfo: libpq key=value string. Starts connecting at once. */
int nf_pg_new(struct nf_pg **out, struct event_base *base, const char *conninfo, int nconns,
              int timeout_ms);
/* Fails queued queries (callbacks fire), closes connections, frees. NULL ok. */
void nf_pg_free(struct nf_pg *pg);
/* true when at least one connection is up. */
bool nf_pg_ready(const struct nf_pg *pg);

/* One parameterised statement. sql and params are copied. -1 only on programmer error. */
int nf_pg_query(struct nf_pg *pg, const char *sql, int nparams, const char *const *params,
                nf_pg_cb cb, void *arg);
/*
 * BEGIN; stmts...; COMMIT on one connection with nothing interleaved. Any failure rolls
 * back and reports err. On success cb gets the last statement's result. Copied.
 */
int nf_pg_tx(struct nf_pg *pg, const struct nf_pg_stmt *stmts, size_t n, nf_pg_cb cb, void *arg);

/* Helpers for reading text results: NULL for SQL NULL or out of range. */
const char *nf_pg_val(const PGresult *res, int row, const char *col);
