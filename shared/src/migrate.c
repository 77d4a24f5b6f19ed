/* Schema migrations: applied in order under an advisory lock so several
 * processes starting together apply each one exactly once. */
#include <stdio.h>
#include <string.h>

#include "atelier/db.h"
#include "atelier/log.h"
#include "migrations.h"

#define MIGRATION_LOCK_KEY 0x41544c52 /* "ATLR" */

static int exec_ok(PGconn *pg, const char *sql, char *errbuf, size_t errlen, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(errbuf, errlen, "%s: %s", what, PQresultErrorMessage(r));
        errbuf[strcspn(errbuf, "\n")] = '\0';
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

at_err_t at_db_migrate(const char *url, int *applied, char *errbuf, size_t errlen)
{
    *applied = 0;
    PGconn *pg = at_db_connect_sync(url, 30000, errbuf, errlen);
    if (!pg)
        return AT_EDB;
    at_err_t err = AT_EDB;
    char lock[128];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%d)", MIGRATION_LOCK_KEY);
    if (exec_ok(pg, "SET client_min_messages = warning", errbuf, errlen, "migrate") != 0 ||
        exec_ok(pg, lock, errbuf, errlen, "migrate: take advisory lock") != 0)
        goto out;
    if (exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                errbuf, errlen, "migrate: create schema_migrations") != 0)
        goto unlock;
    for (size_t i = 0; i < at_migrations_count; i++) {
        const at_migration_t *m = &at_migrations[i];
        const char *p[1] = {m->version};
        PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1,
                                   NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(errbuf, errlen, "migrate %s: %s", m->version, PQresultErrorMessage(r));
            errbuf[strcspn(errbuf, "\n")] = '\0';
            PQclear(r);
            goto unlock;
        }
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        char what[160];
        snprintf(what, sizeof what, "migrate %s", m->version);
        if (exec_ok(pg, "BEGIN", errbuf, errlen, what) != 0)
            goto unlock;
        if (exec_ok(pg, m->sql, errbuf, errlen, what) != 0) {
            PQclear(PQexec(pg, "ROLLBACK"));
            goto unlock;
        }
        r = PQexecParams(pg, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, p,
                         NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok || exec_ok(pg, "COMMIT", errbuf, errlen, what) != 0) {
            PQclear(PQexec(pg, "ROLLBACK"));
            goto unlock;
        }
        at_info("event=migration_applied version=%s", m->version);
        (*applied)++;
    }
    err = AT_OK;
unlock:
    PQclear(PQexec(pg, "SELECT pg_advisory_unlock_all()"));
out:
    PQfinish(pg);
    return err;
}
