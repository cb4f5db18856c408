#pragma once
/*
 * What the cmocka tests share (tests/unit/support, the static library nf_test_support
 * linked into every test executable): driving an event loop until a condition holds,
 * local ports and listeners for fake servers, the NF_TEST_* servers of the integration
 * tests (a test skips when its variable is unset), blocking Redis and Postgres fixtures,
 * recorders for nf_redis and nf_pg callbacks, captured log lines, temporary directories,
 * a main() that lists its tests in one call (NF_TEST_RUN) and the checks every service's
 * configuration test makes (nf_test_svc_*). The HTTP fixture: nf_test_http.h.
 *
 * Checks fail the running test through cmocka, so these functions are for tests, setups
 * and teardowns only; the few that return -1 instead say so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

/* ---- the event loop ---- */

/* Milliseconds on the monotonic clock. */
long long nf_test_now_ms(void);

/* Called on every tick of nf_test_run_ticking. */
typedef void (*nf_test_tick_fn)(void *arg);

/*
 * Runs base until done(arg) holds or max_ms passed; returns done's final value, or false
 * when done is NULL (then it simply runs for max_ms). A persistent timer of tick_ms wakes
 * the loop so that done is looked at even when nothing else happens; tick (may be NULL)
 * runs with tick_arg on each of its firings.
 */
bool nf_test_run_ticking(struct event_base *base, bool (*done)(void *), void *arg, int max_ms,
                         int tick_ms, nf_test_tick_fn tick, void *tick_arg);

/* nf_test_run_ticking with a bare 5 ms tick. */
bool nf_test_run_until(struct event_base *base, bool (*done)(void *), void *arg, int max_ms);

/* Runs base for ms, whatever happens. */
void nf_test_run_for(struct event_base *base, int ms);

/* Runs base until *flag or max_ms passed; returns *flag. */
bool nf_test_wait_flag(struct event_base *base, const bool *flag, int max_ms);

/* Runs base until *count reaches want or max_ms passed; whether it did. */
bool nf_test_wait_count(struct event_base *base, const int *count, int want, int max_ms);

/* ---- test lists ---- */

/*
 * Runs the test functions listed after setup and teardown (either may be NULL) as one
 * cmocka group, each test between the two, in the order written; cmocka prints each
 * test under its name as written. Returns 0 when every test passed or skipped, else 1,
 * so that a main() running several groups can join their results with |=.
 *
 *     return NF_TEST_RUN(setup, teardown, test_one, test_two, test_three);
 */
#define NF_TEST_RUN(setup, teardown, ...)                                                          \
    NF_TEST_RUN_ALL(NULL, NULL, NULL, setup, teardown, __VA_ARGS__)

/* NF_TEST_RUN with *state set to initial before each setup. */
#define NF_TEST_RUN_STATE(initial, setup, teardown, ...)                                           \
    NF_TEST_RUN_ALL(NULL, NULL, initial, setup, teardown, __VA_ARGS__)

/* The tests with a group fixture: group_setup once before them all (its *state is what each
 * test gets), group_teardown once after. */
#define NF_TEST_RUN_GROUP(group_setup, group_teardown, ...)                                        \
    NF_TEST_RUN_ALL(group_setup, group_teardown, NULL, NULL, NULL, __VA_ARGS__)

/* All of the fixtures (each may be NULL): what the other NF_TEST_RUN macros expand to. */
#define NF_TEST_RUN_ALL(group_setup, group_teardown, initial, setup, teardown, ...)                \
    nf_test_run(                                                                                   \
        #__VA_ARGS__, (const CMUnitTestFunction[]){__VA_ARGS__},                                   \
        sizeof((const CMUnitTestFunction[]){__VA_ARGS__}) / sizeof(CMUnitTestFunction),            \
        &(const struct nf_test_fixtures){group_setup, group_teardown, initial, setup, teardown})

/* The fixtures of a group run by nf_test_run; any may be NULL. */
struct nf_test_fixtures {
    CMFixtureFunction group_setup, group_teardown;
    void *initial; /* *state before each setup */
    CMFixtureFunction setup, teardown;
};

/* What the NF_TEST_RUN macros call: names is the list of the n functions fns as written,
 * commas between them. */
int nf_test_run(const char *names, const CMUnitTestFunction *fns, size_t n,
                const struct nf_test_fixtures *fx);

/* Sends nf_log's lines (service "test", level error) to /dev/null for the rest of the
 * run: for tests whose failure paths log on purpose, to keep the output readable. */
void nf_test_log_quiet(void);

/* ---- local ports ---- */

/* A TCP port of 127.0.0.1 that nothing listens on: bound to port 0, read, closed. */
int nf_test_closed_port(void);

/*
 * Listens on 127.0.0.1:port (0: a free one) with cb(arg) for each connection; *bound
 * (may be NULL) gets the port. The listener closes its socket when freed. Fails the test
 * when it cannot bind.
 */
struct evconnlistener *nf_test_listen(struct event_base *base, evconnlistener_cb cb, void *arg,
                                      int port, int *bound);

/* ---- the servers of the integration tests ---- */

/* The environment variable name, or NULL when it is unset or empty. */
const char *nf_test_env(const char *name);

/*
 * *state, or a skip of the running test when it is NULL. A setup that finds no server
 * leaves *state NULL and returns 0: cmocka counts a skip() inside a setup as an error.
 */
void *nf_test_need(void **state);

/* Skips the running test unless ok (the fixture a setup left in a global is there). */
void nf_test_skip_unless(bool ok);

/* Writes prefix and 12 lowercase letters unique to this process and call into out, a
 * name usable for schemas, keys and topics that repeated runs never share. */
void nf_test_unique_name(char *out, size_t len, const char *prefix);

/* ---- Redis, blocking (hiredis) ---- */

/*
 * Connects to NF_TEST_REDIS_ADDR (host:port); db >= 0: selects that database, the test's
 * own, and empties it. Returns 0 with *out NULL when the variable is unset (the tests
 * skip), 0 with *out the connection (closed by nf_test_redis_close), or -1, said on
 * stderr, when it cannot connect: for a setup to return.
 */
int nf_test_redis_open(redisContext **out, int db);

/* Empties database db (when >= 0) and closes rc; rc may be NULL. */
void nf_test_redis_close(redisContext *rc, int db);

/* Skips the running test unless rc is connected, then empties rc's database: for tests
 * that share a connection opened by a group setup and each start from nothing. */
void nf_test_redis_fresh(redisContext *rc);

/* A Redis database of the tests' own, for NF_TEST_RUN_STATE(&it, nf_test_redis_db_setup,
 * nf_test_redis_db_teardown, ...): between the two, rc is connected to database db,
 * emptied before and after each test; rc stays NULL when NF_TEST_REDIS_ADDR is unset (the
 * tests skip). */
struct nf_test_redis_db {
    int db;
    redisContext *rc;
};

int nf_test_redis_db_setup(void **state);
int nf_test_redis_db_teardown(void **state);

/* Runs one command; fails the test on an error reply or a lost connection. */
void nf_test_redis_ok(redisContext *rc, const char *fmt, ...);

/*
 * EVAL script with nkeys keys: args holds the nkeys keys then the arguments, nargs
 * strings in all. Fails the test on an error reply; returns the reply (caller frees).
 */
redisReply *nf_test_redis_eval(redisContext *rc, const char *script, int nkeys, int nargs,
                               const char *const *args);

/* ---- nf_redis callbacks ---- */

/* What an nf_redis callback saw, recorded by nf_test_on_reply. */
struct nf_test_reply {
    int calls;
    bool null; /* the reply was NULL: error, timeout or closing */
    int type;
    long long integer;
    char str[128]; /* the string reply, binary-safe up to len, NUL-terminated */
    size_t len;
    size_t elements;
    char el[8][64]; /* the first 8 elements of an array, as strings */
    long long at_ms;
};

/* An nf_redis_cb recording into arg, a struct nf_test_reply. */
void nf_test_on_reply(redisReply *reply, void *arg);

/* Predicates for nf_test_run_until: arg is a struct nf_test_reply, or a struct nf_redis. */
bool nf_test_replied(void *reply);
bool nf_test_redis_ready(void *r);
bool nf_test_redis_down(void *r);

/* ---- Postgres, blocking (libpq) ---- */

/*
 * Connects to NF_TEST_PG_DSN after migrating schema from the directory migrations (both
 * NULL: no migration). Returns 0 with *out NULL when the variable is unset (the tests
 * skip), 0 with *out the connection (the caller PQfinishes it), or -1, said on stderr:
 * for a setup to return.
 */
int nf_test_pg_open(PGconn **out, const char *schema, const char *migrations);

/* Runs one parameterised statement; fails the test unless it succeeds. Returns the
 * result (caller PQclears). */
PGresult *nf_test_pg_run(PGconn *conn, const char *sql, int n, const char *const *params);

/* nf_test_pg_run without the result. */
void nf_test_pg_exec(PGconn *conn, const char *sql, int n, const char *const *params);

/* The first row's first column as a new string (caller frees); NULL when there is no
 * row or the value is SQL NULL. */
char *nf_test_pg_one(PGconn *conn, const char *sql, int n, const char *const *params);

/* ---- nf_pg callbacks ---- */

/* What an nf_pg callback saw, recorded by nf_test_on_pg: the first row's first 4
 * columns (by index) as text. */
struct nf_test_pg {
    int calls;
    bool ok;          /* res set and err NULL */
    bool res_null;    /* res was NULL */
    bool err_null;    /* err was NULL */
    bool contract_ok; /* exactly one of res and err, pgcode never NULL */
    char err[256];
    char pgcode[16]; /* "(null)" when it was NULL */
    int ntuples;
    char v[4][128];
    bool isnull[4];
    long long at_ms;
};

/* An nf_pg_cb recording into arg, a struct nf_test_pg. */
void nf_test_on_pg(const PGresult *res, const char *err, const char *pgcode, void *arg);

/* Predicate for nf_test_run_until on a struct nf_test_pg; also fails the test when the
 * callback broke its contract (cmocka cannot fail inside a callback). */
bool nf_test_pg_called(void *seen);

/* Predicate for nf_test_run_until: the struct nf_pg pool has a connection. */
bool nf_test_pg_ready(void *pg);

/* ---- log lines ---- */

/* nf_log's output kept in memory between nf_test_log_begin and nf_test_log_end. */
struct nf_test_log {
    char *buf; /* the lines so far, after nf_test_log_text */
    size_t len;
    FILE *f;
};

/* Sends nf_log's lines to cap. */
void nf_test_log_begin(struct nf_test_log *cap);

/* The lines so far, "" when none. */
const char *nf_test_log_text(struct nf_test_log *cap);

/* Whether a line with "event":"<event>" was logged. */
bool nf_test_logged(struct nf_test_log *cap, const char *event);

/* Sends nf_log's lines to stderr again and frees what cap holds. */
void nf_test_log_end(struct nf_test_log *cap);

/* ---- service configuration (nf_svc) ---- */

struct nf_svc;
struct nf_svc_desc;

/* Applies each setting of the NULL-terminated list to the environment: "VAR=value" (the
 * value may be empty) sets VAR, "VAR" unsets it. */
void nf_test_setenv(const char *setting, ...) __attribute__((sentinel));

/* Unsets every variable of desc's configuration: the shared rows nf_svc builds for it and
 * the service's own. */
void nf_test_svc_clear_env(const struct nf_svc_desc *desc);

/* A setup: nf_test_svc_clear_env(*state), *state being the descriptor. */
int nf_test_svc_setup(void **state);

/* Runs the tests listed after desc (a const struct nf_svc_desc *), each in an environment
 * without any of the service's variables and with *state the descriptor; as NF_TEST_RUN. */
#define NF_TEST_RUN_SVC(desc, ...)                                                                 \
    NF_TEST_RUN_STATE((void *)(desc), nf_test_svc_setup, NULL, __VA_ARGS__)

/* Loads desc's configuration from the environment into svc (nf_svc_free releases it);
 * fails the test unless it loads. Returns svc->own, the service's rows. */
const void *nf_test_svc_load(struct nf_svc *svc, const struct nf_svc_desc *desc);

/*
 * Checks the defaults of the shared backend rows, the same for every service: with kafka
 * NF_KAFKA_BROKERS 127.0.0.1:9092, 3 partitions and replication 1; with redis
 * NF_REDIS_ADDR 127.0.0.1:6379; with pg the development DSN and 4 connections. A backend
 * the service does not use has no address (NULL). The log level is info.
 */
void nf_test_svc_backend_defaults(const struct nf_svc *svc, bool kafka, bool redis, bool pg);

/*
 * Checks that desc refuses setting on top of the current environment: "VAR=value" (the
 * value may be empty) or "VAR" (VAR unset). nf_svc_load must fail with a message naming
 * VAR and containing says (unless says is NULL); VAR is restored afterwards.
 */
void nf_test_svc_refused(const struct nf_svc_desc *desc, const char *setting, const char *says);

/* nf_test_svc_refused for each setting of the NULL-terminated list, one at a time. */
void nf_test_svc_refuses(const struct nf_svc_desc *desc, ...) __attribute__((sentinel));

/* ---- files ---- */

/* Makes a new directory /tmp/<prefix>XXXXXX, its path in out; fails the test when it
 * cannot. */
void nf_test_tmpdir(char *out, size_t len, const char *prefix);

/* Removes path and everything below it, following no symbolic link; 0 or -1. */
int nf_test_rmtree(const char *path);

/* Writes text to path (created or truncated) with the given mode; fails the test when it
 * cannot. */
void nf_test_write_file(const char *path, const char *text, unsigned mode);
