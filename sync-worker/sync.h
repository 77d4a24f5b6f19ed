/*
 * What the sync-worker's parts share: the worker, the pool its file
 * operations run on (they block), and where volumes are.
 *
 *   load.c     `load`: a volume brought up to date from the rows (one tar)
 *   push.c     `push`: one saved/deleted/moved path applied to a volume
 *   watch.c    a running volume's changes (inotify) into the rows
 *   watchset.c which volumes this instance watches
 *   fsops.c    the file operations, confined to a volume
 */
#ifndef SYNC_SYNC_H
#define SYNC_SYNC_H

#include <limits.h>
#include <sys/types.h>

#include "atelier/pool.h"
#include "atelier/worker.h"

typedef struct sync_ctx {
    at_worker_t *w;
    at_pool_t *pool;
    char base[PATH_MAX]; /* WORKSPACE_BASE_PATH, resolved */
} sync_ctx_t;

extern sync_ctx_t sync_g;

/* <base>/<volume> into out; -1 when it does not fit or volume is not a plain name. */
int sync_volume_dir(const char *volume, char *out, size_t cap);

/* The volume at dir, opened (O_RDONLY | O_DIRECTORY) only if it is mounted
 * there (a running session's); -1 otherwise. Blocking: on the pool. */
int sync_open_volume(const char *dir);

#endif
