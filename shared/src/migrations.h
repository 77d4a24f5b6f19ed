/* Private: migrations compiled in by embed_sql.cmake. */
#ifndef ATELIER_MIGRATIONS_H
#define ATELIER_MIGRATIONS_H

#include <stddef.h>

typedef struct at_migration {
    const char *version; /* file name without .sql, e.g. "001_init" */
    const char *sql;
} at_migration_t;

extern const at_migration_t at_migrations[];
extern const size_t at_migrations_count;

#endif
