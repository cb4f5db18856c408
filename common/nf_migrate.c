/*
 * nf_migrate: applies dir/NNNN_name.sql in name order, each once; see nf_migrate.h.
 *
 *   list *.sql (strcmp order) -> connect -> pg_advisory_lock(hashtext('nf_migrate:'||schema))
 *     -> CREATE SCHEMA / schema_migrations if missing -> read applied versions
 *     -> for each new file: BEGIN; <file>; INSERT version; COMMIT   (ROLLBACK + stop on error)
 *     -> pg_advisory_unlock -> PQfinish
 *
 * Blocking libpq, run once at start before the event loop. The version recorded is the
 * file name ("0001_init.sql"). A file runs as one simple-protocol PQexec, so it may hold
 * several statements but must not manage transactions itself. The schema name is checked
 * against [a-z_]+ before it is ever put into SQL text.
 */
#include "nf_migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nf_log.h"
#include "nf_mem.h"

#define MAX_SCHEMA_LEN 63
#define MAX_FILE_BYTES ((size_t)16 * 1024 * 1024)

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
                                                         ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

static bool schema_ok(const char *schema)
{
    size_t n = schema ? strlen(schema) : 0;
    if (n == 0 || n > MAX_SCHEMA_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((schema[i] >= 'a' && schema[i] <= 'z') || schema[i] == '_'))
            return false;
    return true;
}

static void notice_cb(void *arg, const char *message)
{
    char msg[512];
    seterr(msg, sizeof(msg), "%s", message);
    nf_log_kv(NF_LOG_DEBUG, "pg_notice", "postgres notice", "notice", msg, NULL);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The regular files named *.sql in dir, sorted by strcmp. *out owned by the caller. */
static int list_files(const char *dir, char ***out, size_t *nout, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        seterr(err, errlen, "%s: cannot open migrations directory: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= 4 || strcmp(de->d_name + len - 4, ".sql") != 0 || de->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = nf_xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = nf_xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    *out = names;
    *nout = n;
    return 0;
}

/* Reads a whole file as a NUL-terminated string (caller frees), or NULL with err set. */
static char *read_file(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        seterr(err, errlen, "%s: cannot open: %s", name, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = nf_xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
        if (len > MAX_FILE_BYTES) {
            seterr(err, errlen, "%s: larger than %zu bytes", name, MAX_FILE_BYTES);
            goto err_read;
        }
    }
    if (ferror(f)) {
        seterr(err, errlen, "%s: cannot read: %s", name, strerror(errno));
        goto err_read;
    }
    fclose(f);
    buf[len] = '\0';
    if (strlen(buf) != len) {
        seterr(err, errlen, "%s: contains a NUL byte", name);
        free(buf);
        return NULL;
    }
    return buf;

err_read:
    fclose(f);
    free(buf);
    return NULL;
}

/* Runs sql (no parameters) and checks the outcome; on failure err is "<what>: <message>". */
static int exec_ok(PGconn *conn, const char *sql, int nparams, const char *const *params,
                   const char *what, char *err, size_t errlen)
{
    PGresult *res = nparams > 0 ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                                : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        PQclear(res);
        return 0;
    }
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (primary)
        seterr(err, errlen, "%s: %s (SQLSTATE %s)", what, primary, code ? code : "?");
    else
        seterr(err, errlen, "%s: %s", what, PQerrorMessage(conn));
    PQclear(res);
    return -1;
}

/* Creates the schema and its schema_migrations table unless they exist. */
static int ensure_schema(PGconn *conn, const char *schema, char *err, size_t errlen)
{
    char sql[256];
    const char *params[] = {schema};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL,
                                 params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        seterr(err, errlen, "cannot look up schema %s: %s", schema, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    bool exists = PQntuples(res) > 0;
    PQclear(res);
    /* only create when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the
     * database, which a service's role may lack once the schema is there */
    if (!exists) {
        snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS \"%s\"", schema);
        if (exec_ok(conn, sql, 0, NULL, "cannot create schema", err, errlen) < 0)
            return -1;
    }
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS \"%s\".schema_migrations ("
             "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
             schema);
    return exec_ok(conn, sql, 0, NULL, "cannot create schema_migrations", err, errlen);
}

static bool applied(PGresult *res, const char *name)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (strcmp(PQgetvalue(res, i, 0), name) == 0)
            return true;
    return false;
}

/* Applies one file in its own transaction together with its record. */
static int apply_one(PGconn *conn, const char *schema, const char *dir, const char *name, char *err,
                     size_t errlen)
{
    char *sql = read_file(dir, name, err, errlen);
    if (sql == NULL)
        return -1;
    char ins[256];
    snprintf(ins, sizeof(ins), "INSERT INTO \"%s\".schema_migrations (version) VALUES ($1)",
             schema);
    const char *params[] = {name};
    int rc = -1;
    if (exec_ok(conn, "BEGIN", 0, NULL, name, err, errlen) < 0)
        goto out;
    if (exec_ok(conn, sql, 0, NULL, name, err, errlen) < 0 ||
        exec_ok(conn, ins, 1, params, name, err, errlen) < 0 ||
        exec_ok(conn, "COMMIT", 0, NULL, name, err, errlen) < 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        goto out;
    }
    rc = 0;
out:
    free(sql);
    return rc;
}

int nf_migrate_run(const char *conninfo, const char *schema, const char *dir, char *err,
                   size_t errlen)
{
    seterr(err, errlen, "%s", "");
    if (conninfo == NULL || dir == NULL) {
        seterr(err, errlen, "conninfo and dir are required");
        return -1;
    }
    if (!schema_ok(schema)) {
        seterr(err, errlen, "invalid schema name \"%s\": use [a-z_], 1 to %d characters",
               schema ? schema : "", MAX_SCHEMA_LEN);
        return -1;
    }

    char **names = NULL;
    size_t n = 0;
    if (list_files(dir, &names, &n, err, errlen) < 0)
        return -1;

    int count = -1;
    char lockkey[128];
    snprintf(lockkey, sizeof(lockkey), "nf_migrate:%s", schema);
    const char *lockparams[] = {lockkey};

    /* a default connect_timeout, which the conninfo may override (it is expanded later) */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {"10", conninfo, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        seterr(err, errlen, "cannot connect to postgres: %s",
               conn ? PQerrorMessage(conn) : "out of memory");
        goto out_finish;
    }
    PQsetNoticeProcessor(conn, notice_cb, NULL);

    if (exec_ok(conn, "SELECT pg_advisory_lock(hashtext($1))", 1, lockparams,
                "cannot take the migration lock", err, errlen) < 0)
        goto out_finish;

    if (ensure_schema(conn, schema, err, errlen) < 0)
        goto out_unlock;

    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT version FROM \"%s\".schema_migrations", schema);
    PGresult *done = PQexec(conn, sql);
    if (PQresultStatus(done) != PGRES_TUPLES_OK) {
        seterr(err, errlen, "cannot read schema_migrations: %s", PQerrorMessage(conn));
        PQclear(done);
        goto out_unlock;
    }
    int nnew = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (applied(done, names[i]))
            continue;
        if (apply_one(conn, schema, dir, names[i], err, errlen) < 0) {
            nf_log_kv(NF_LOG_ERROR, "migration_failed", "migration failed", "schema", schema,
                      "file", names[i], "error", err, NULL);
            break;
        }
        nf_log_kv(NF_LOG_INFO, "migration_applied", "migration applied", "schema", schema, "file",
                  names[i], NULL);
        nnew++;
    }
    PQclear(done);
    if (i == n)
        count = nnew;

out_unlock:
    /* PQfinish would release the lock too; unlock explicitly while the session is sane */
    PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, lockparams, NULL,
                         NULL, 0));
out_finish:
    PQfinish(conn);
    free_names(names, n);
    return count;
}
