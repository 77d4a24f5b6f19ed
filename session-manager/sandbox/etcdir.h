/* Copying and removing small host trees (the sandboxes' prepared /etc,
 * bwrap.h at_bwrap_prepare_etc). Internal to the sandbox library. */
#ifndef ATELIER_SBX_ETCDIR_H
#define ATELIER_SBX_ETCDIR_H

#include <stddef.h>
#include <stdint.h>

#include "atelier/err.h"

typedef struct {
    size_t bytes, entries;         /* used so far */
    size_t max_bytes, max_entries; /* the copy fails past these */
    uint64_t hash;                 /* FNV-1a of names, modes, link targets and contents */
} sbx_copy_budget_t;

/* Copy src to dst (which must not exist): symlinks as symlinks (never
 * followed), regular files and directories with their modes, only what
 * "others" may read; other file types and a missing src are skipped. */
at_err_t sbx_copy_tree(const char *src, const char *dst, sbx_copy_budget_t *b, char *errbuf,
                       size_t errlen);
/* Remove path and everything under it (no symlink followed); best effort. */
void sbx_remove_tree(const char *path);

#endif
