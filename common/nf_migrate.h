#pragma once
/*
 * nf_migrate: applies a service's migrations at start (blocking, before the loop runs).
 *
 * Files dir/NNNN_name.sql are applied in name order, each in its own transaction, and
 * recorded in <schema>.schema_migrations(version text primary key, applied_at). The
 * whole run holds a Postgres advisory lock derived from the schema name, so several
 * copies of a service starting together apply each migration once. A migration that was
 * applied is never re-run; a failing one stops the run with its file name and the
 * Postgres message in err.
 */
#include <stddef.h>

/* Returns the number of migrations applied (0 if up to date) or -1 with err set. */
int nf_migrate_run(const char *conninfo, const char *schema, const char *dir, char *err,
                   size_t errlen);
