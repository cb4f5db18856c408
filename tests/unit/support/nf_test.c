/* The helpers shared by the cmocka tests; see nf_test.h. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nf_cfg.h"
#include "nf_log.h"
#include "nf_migrate.h"
#include "nf_pg.h"
#include "nf_redis.h"
#include "nf_svc.h"
#include "nf_test.h"

/* ---- the event loop ---- */

long long nf_test_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ticker {
    nf_test_tick_fn fn;
    void *arg;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct ticker *t = arg;

    if (t->fn)
        t->fn(t->arg);
}

bool nf_test_run_ticking(struct event_base *base, bool (*done)(void *), void *arg, int max_ms,
                         int tick_ms, nf_test_tick_fn tick, void *tick_arg)
{
    struct ticker t = {tick, tick_arg};
    struct event *ev = event_new(base, -1, EV_PERSIST, on_tick, &t);
    struct timeval tv = {tick_ms / 1000, (suseconds_t)(tick_ms % 1000) * 1000};
    long long end = nf_test_now_ms() + max_ms;

    assert_non_null(ev);
    event_add(ev, &tv);
    while (!(done && done(arg)) && nf_test_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(ev);
    return done ? done(arg) : false;
}

bool nf_test_run_until(struct event_base *base, bool (*done)(void *), void *arg, int max_ms)
{
    return nf_test_run_ticking(base, done, arg, max_ms, 5, NULL, NULL);
}

void nf_test_run_for(struct event_base *base, int ms)
{
    nf_test_run_ticking(base, NULL, NULL, ms, 5, NULL, NULL);
}

static bool flag_set(void *flag)
{
    return *(const bool *)flag;
}

bool nf_test_wait_flag(struct event_base *base, const bool *flag, int max_ms)
{
    return nf_test_run_until(base, flag_set, (void *)flag, max_ms);
}

struct count_wait {
    const int *count;
    int want;
};

static bool count_reached(void *arg)
{
    const struct count_wait *w = arg;

    return *w->count >= w->want;
}

bool nf_test_wait_count(struct event_base *base, const int *count, int want, int max_ms)
{
    struct count_wait w = {count, want};

    return nf_test_run_until(base, count_reached, &w, max_ms);
}

/* ---- test lists ---- */

int nf_test_run(const char *names, const CMUnitTestFunction *fns, size_t n,
                const struct nf_test_fixtures *fx)
{
    struct CMUnitTest *tests = calloc(n, sizeof(*tests));
    char *copy = strdup(names);
    char *save = NULL, *name = strtok_r(copy, ", ", &save);
    int rc;

    assert_non_null(tests);
    assert_non_null(copy);
    for (size_t i = 0; i < n; i++, name = strtok_r(NULL, ", ", &save)) {
        tests[i].name = name != NULL ? name : "?";
        tests[i].test_func = fns[i];
        tests[i].setup_func = fx->setup;
        tests[i].teardown_func = fx->teardown;
        tests[i].initial_state = fx->initial;
    }
    rc = _cmocka_run_group_tests("tests", tests, n, fx->group_setup, fx->group_teardown);
    free(tests);
    free(copy);
    return rc != 0;
}

void nf_test_log_quiet(void)
{
    static FILE *devnull; /* open until the process exits */

    nf_log_init("test", NF_LOG_ERROR);
    if (devnull == NULL)
        devnull = fopen("/dev/null", "w");
    nf_log_set_output(devnull);
}

/* ---- local ports ---- */

int nf_test_closed_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

struct evconnlistener *nf_test_listen(struct event_base *base, evconnlistener_cb cb, void *arg,
                                      int port, int *bound)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof(sin);
    struct evconnlistener *lis =
        evconnlistener_new_bind(base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                (struct sockaddr *)&sin, sizeof(sin));

    assert_non_null(lis);
    assert_int_equal(getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&sin, &len), 0);
    if (bound)
        *bound = ntohs(sin.sin_port);
    return lis;
}

/* ---- the servers of the integration tests ---- */

const char *nf_test_env(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : NULL;
}

void *nf_test_need(void **state)
{
    if (*state == NULL)
        skip();
    return *state;
}

void nf_test_skip_unless(bool ok)
{
    if (!ok)
        skip();
}

void nf_test_unique_name(char *out, size_t len, const char *prefix)
{
    static unsigned calls;
    struct timespec ts;
    unsigned long long v;
    char tag[13];

    clock_gettime(CLOCK_REALTIME, &ts);
    v = (unsigned long long)getpid() * 1000003ULL ^ (unsigned long long)ts.tv_nsec ^
        ((unsigned long long)ts.tv_sec << 20) ^ ((unsigned long long)++calls << 40);
    for (int i = 0; i < 12; i++) {
        tag[i] = (char)('a' + v % 26);
        v /= 26;
    }
    tag[12] = '\0';
    snprintf(out, len, "%s%s", prefix, tag);
}

/* ---- Redis, blocking ---- */

int nf_test_redis_open(redisContext **out, int db)
{
    const char *addr = nf_test_env("NF_TEST_REDIS_ADDR");
    char *host = NULL;
    int port = 0;
    redisContext *rc;

    *out = NULL;
    if (addr == NULL)
        return 0;
    if (nf_cfg_split_addr(addr, &host, &port) < 0) {
        fprintf(stderr, "NF_TEST_REDIS_ADDR: not host:port: %s\n", addr);
        return -1;
    }
    rc = redisConnect(host, port);
    free(host);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "cannot connect to redis at %s\n", addr);
        redisFree(rc);
        return -1;
    }
    if (db >= 0) {
        nf_test_redis_ok(rc, "SELECT %d", db);
        nf_test_redis_ok(rc, "FLUSHDB");
    }
    *out = rc;
    return 0;
}

void nf_test_redis_close(redisContext *rc, int db)
{
    if (rc == NULL)
        return;
    if (db >= 0)
        freeReplyObject(redisCommand(rc, "FLUSHDB"));
    redisFree(rc);
}

int nf_test_redis_db_setup(void **state)
{
    struct nf_test_redis_db *it = *state;

    return nf_test_redis_open(&it->rc, it->db);
}

int nf_test_redis_db_teardown(void **state)
{
    struct nf_test_redis_db *it = *state;

    nf_test_redis_close(it->rc, it->db);
    it->rc = NULL;
    return 0;
}

void nf_test_redis_fresh(redisContext *rc)
{
    nf_test_skip_unless(rc != NULL);
    nf_test_redis_ok(rc, "FLUSHDB");
}

void nf_test_redis_ok(redisContext *rc, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, r ? r->str : rc->errstr);
    freeReplyObject(r);
}

redisReply *nf_test_redis_eval(redisContext *rc, const char *script, int nkeys, int nargs,
                               const char *const *args)
{
    const char *argv[64];
    char nk[16];
    int argc = 0;
    redisReply *r;

    assert_true(nargs >= nkeys && nargs <= 61);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = nk;
    for (int i = 0; i < nargs; i++)
        argv[argc++] = args[i];
    r = redisCommandArgv(rc, argc, argv, NULL);
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", r ? r->str : rc->errstr);
    return r;
}

/* ---- nf_redis callbacks ---- */

void nf_test_on_reply(redisReply *reply, void *arg)
{
    struct nf_test_reply *s = arg;
    size_t n;

    s->calls++;
    s->at_ms = nf_test_now_ms();
    s->null = reply == NULL;
    if (reply == NULL)
        return;
    s->type = reply->type;
    s->integer = reply->integer;
    s->len = reply->len;
    n = reply->len < sizeof(s->str) - 1 ? reply->len : sizeof(s->str) - 1;
    if (reply->str)
        memcpy(s->str, reply->str, n);
    s->str[reply->str ? n : 0] = '\0';
    s->elements = reply->elements;
    for (size_t i = 0; i < reply->elements && i < 8; i++) {
        const redisReply *e = reply->element[i];

        if (e->str)
            snprintf(s->el[i], sizeof(s->el[i]), "%.*s", (int)e->len, e->str);
        else if (e->type == REDIS_REPLY_INTEGER)
            snprintf(s->el[i], sizeof(s->el[i]), "%lld", e->integer);
    }
}

bool nf_test_replied(void *reply)
{
    return ((struct nf_test_reply *)reply)->calls > 0;
}

bool nf_test_redis_ready(void *r)
{
    return nf_redis_ready(r);
}

bool nf_test_redis_down(void *r)
{
    return !nf_redis_ready(r);
}

/* ---- Postgres, blocking ---- */

int nf_test_pg_open(PGconn **out, const char *schema, const char *migrations)
{
    const char *dsn = nf_test_env("NF_TEST_PG_DSN");
    char err[512];
    PGconn *conn;

    *out = NULL;
    if (dsn == NULL)
        return 0;
    if (schema && nf_migrate_run(dsn, schema, migrations, err, sizeof(err)) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    conn = PQconnectdb(dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s\n", PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    *out = conn;
    return 0;
}

PGresult *nf_test_pg_run(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%.120s: %s", sql, PQerrorMessage(conn));
    return res;
}

void nf_test_pg_exec(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PQclear(nf_test_pg_run(conn, sql, n, params));
}

char *nf_test_pg_one(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = nf_test_pg_run(conn, sql, n, params);
    char *v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strdup(PQgetvalue(res, 0, 0)) : NULL;

    PQclear(res);
    return v;
}

/* ---- nf_pg callbacks ---- */

void nf_test_on_pg(const PGresult *res, const char *err, const char *pgcode, void *arg)
{
    struct nf_test_pg *s = arg;

    s->calls++;
    s->at_ms = nf_test_now_ms();
    s->ok = res != NULL && err == NULL;
    s->res_null = res == NULL;
    s->err_null = err == NULL;
    s->contract_ok = (res == NULL) == (err != NULL) && pgcode != NULL;
    snprintf(s->err, sizeof(s->err), "%s", err ? err : "");
    snprintf(s->pgcode, sizeof(s->pgcode), "%s", pgcode ? pgcode : "(null)");
    if (res == NULL)
        return;
    s->ntuples = PQntuples(res);
    for (int c = 0; c < PQnfields(res) && c < 4 && s->ntuples > 0; c++) {
        s->isnull[c] = PQgetisnull(res, 0, c);
        snprintf(s->v[c], sizeof(s->v[c]), "%s", PQgetvalue(res, 0, c));
    }
}

bool nf_test_pg_called(void *seen)
{
    const struct nf_test_pg *s = seen;

    if (s->calls > 0 && !s->contract_ok)
        fail_msg("callback got res and err both set or both NULL, or pgcode NULL");
    return s->calls > 0;
}

bool nf_test_pg_ready(void *pg)
{
    return nf_pg_ready(pg);
}

/* ---- log lines ---- */

void nf_test_log_begin(struct nf_test_log *cap)
{
    cap->buf = NULL;
    cap->len = 0;
    cap->f = open_memstream(&cap->buf, &cap->len);
    assert_non_null(cap->f);
    nf_log_set_output(cap->f);
}

const char *nf_test_log_text(struct nf_test_log *cap)
{
    fflush(cap->f);
    return cap->buf ? cap->buf : "";
}

bool nf_test_logged(struct nf_test_log *cap, const char *event)
{
    char needle[128];

    snprintf(needle, sizeof(needle), "\"event\":\"%s\"", event);
    return strstr(nf_test_log_text(cap), needle) != NULL;
}

void nf_test_log_end(struct nf_test_log *cap)
{
    nf_log_set_output(NULL);
    fclose(cap->f);
    free(cap->buf);
    cap->f = NULL;
    cap->buf = NULL;
    cap->len = 0;
}

/* ---- service configuration (nf_svc) ---- */

void nf_test_svc_clear_env(const struct nf_svc_desc *desc)
{
    struct nf_svc svc;
    char err[256];

    nf_svc_load(&svc, desc, err, sizeof(err)); /* builds the shared rows, loaded or not */
    for (size_t i = 0; i < svc.nshared; i++)
        unsetenv(svc.shared_opts[i].env);
    nf_svc_free(&svc);
    for (size_t i = 0; i < desc->nopts; i++)
        unsetenv(desc->opts[i].env);
}

int nf_test_svc_setup(void **state)
{
    nf_test_svc_clear_env(*state);
    return 0;
}

const void *nf_test_svc_load(struct nf_svc *svc, const struct nf_svc_desc *desc)
{
    char err[256] = "";

    if (nf_svc_load(svc, desc, err, sizeof(err)) != 0)
        fail_msg("nf_svc_load: %s", err);
    return svc->own;
}

void nf_test_svc_backend_defaults(const struct nf_svc *svc, bool kafka, bool redis, bool pg)
{
    assert_int_equal(svc->cfg.log_level, NF_LOG_INFO);
    if (kafka) {
        assert_string_equal(svc->cfg.brokers, "127.0.0.1:9092");
        assert_int_equal(svc->cfg.partitions, 3);
        assert_int_equal(svc->cfg.replication, 1);
    } else {
        assert_null(svc->cfg.brokers);
    }
    if (redis)
        assert_string_equal(svc->cfg.redis_addr, "127.0.0.1:6379");
    else
        assert_null(svc->cfg.redis_addr);
    if (pg) {
        assert_string_equal(svc->cfg.pg_dsn, "host=127.0.0.1 port=5432 dbname=forge user=forge");
        assert_int_equal(svc->cfg.pg_conns, 4);
    } else {
        assert_null(svc->cfg.pg_dsn);
    }
}

/* The VAR of "VAR=value" or "VAR", copied into var. */
static const char *var_of(const char *setting, char *var, size_t len)
{
    size_t n = strcspn(setting, "=");

    assert_true(n > 0 && n < len);
    memcpy(var, setting, n);
    var[n] = '\0';
    return var;
}

/* Sets "VAR=value" or unsets "VAR"; var gets VAR. */
static void put_setting(const char *setting, char *var, size_t len)
{
    const char *eq = strchr(setting, '=');

    var_of(setting, var, len);
    if (eq != NULL)
        assert_int_equal(setenv(var, eq + 1, 1), 0);
    else
        assert_int_equal(unsetenv(var), 0);
}

void nf_test_setenv(const char *setting, ...)
{
    char var[128];
    va_list ap;

    va_start(ap, setting);
    for (; setting != NULL; setting = va_arg(ap, const char *))
        put_setting(setting, var, sizeof(var));
    va_end(ap);
}

void nf_test_svc_refused(const struct nf_svc_desc *desc, const char *setting, const char *says)
{
    struct nf_svc svc;
    char var[128], err[256] = "";
    const char *was = getenv(var_of(setting, var, sizeof(var)));
    char *old = was != NULL ? strdup(was) : NULL;
    int rc;

    put_setting(setting, var, sizeof(var));
    rc = nf_svc_load(&svc, desc, err, sizeof(err));
    nf_svc_free(&svc); /* safe on a half-loaded svc */
    if (old != NULL)
        setenv(var, old, 1);
    else
        unsetenv(var);
    free(old);
    if (rc != -1)
        fail_msg("%s accepted", setting);
    if (strstr(err, var) == NULL)
        fail_msg("%s: message does not name %s: %s", setting, var, err);
    if (says != NULL && strstr(err, says) == NULL)
        fail_msg("%s: message does not say \"%s\": %s", setting, says, err);
}

void nf_test_svc_refuses(const struct nf_svc_desc *desc, ...)
{
    const char *setting;
    va_list ap;

    va_start(ap, desc);
    while ((setting = va_arg(ap, const char *)) != NULL)
        nf_test_svc_refused(desc, setting, NULL);
    va_end(ap);
}

/* ---- files ---- */

void nf_test_tmpdir(char *out, size_t len, const char *prefix)
{
    assert_true((size_t)snprintf(out, len, "/tmp/%sXXXXXX", prefix) < len);
    assert_non_null(mkdtemp(out));
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int nf_test_rmtree(const char *path)
{
    return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

void nf_test_write_file(const char *path, const char *text, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, (mode_t)mode);
    size_t len = strlen(text);

    if (fd < 0)
        fail_msg("cannot create %s", path);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, (mode_t)mode), 0);
    close(fd);
}
