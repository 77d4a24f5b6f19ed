/*
 * PostgreSQL: a small pool of non-blocking libpq connections on the process's
 * loop. Parameterised queries only. Queries wait in a bounded FIFO when every
 * connection is busy; connections that break are reopened with backoff.
 */
#ifndef ATELIER_DB_H
#define ATELIER_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "err.h"
#include "io.h"

typedef struct at_db at_db_t;

/* res is the statement's result (owned by the pool, valid during the call);
 * err is NULL on success, else a message naming what failed. */
typedef void at_db_cb(PGresult *res, const char *err, void *arg);

at_db_t *at_db_new(at_io_t *io, const char *url, int pool_size, int queue_max);
/* Fails queued queries with "shutting down" and closes every connection. */
void at_db_free(at_db_t *db);
/* Connections currently usable (idle or busy). */
int at_db_connected(const at_db_t *db);

/* Text parameters (NULL entries are SQL NULL); params are copied. cb may be
 * NULL for a fire-and-forget statement (failures are logged). */
at_err_t at_db_query(at_db_t *db, const char *sql, int nparams, const char *const *params,
                     at_db_cb *cb, void *arg);
/* With explicit lengths and formats (1 = binary) per parameter. */
at_err_t at_db_query_bin(at_db_t *db, const char *sql, int nparams, const char *const *params,
                         const int *lengths, const int *formats, at_db_cb *cb, void *arg);

/* Apply the migrations compiled into the binary (shared/sql/NNN_*.sql) that
 * are not yet in schema_migrations, in order, each in its own transaction,
 * under an advisory lock. Blocking: call before the loop runs. */
at_err_t at_db_migrate(const char *url, int *applied, char *errbuf, size_t errlen);

/* Blocking connect that retries until timeout_ms (start-up only). */
PGconn *at_db_connect_sync(const char *url, int timeout_ms, char *errbuf, size_t errlen);

#endif
