/*
 * Sandbox -> rows (ARCHITECTURE.md, data path 4): each watched volume's
 * changes, seen with inotify (one instance for every volume, a watch per
 * folder), gathered for WATCH_DEBOUNCE_MS, then taken in by path: what the
 * path holds now (lstat, read, sha256 on the pool) becomes its row through
 * ws_sync_file / ws_sync_folder / ws_sync_delete (shared/sql/005_sync.sql),
 * and a `file_changed` event goes to every live session of the workspace.
 *
 * A rescan (at the start of a watch, after IN_Q_OVERFLOW, after a watch
 * could not be added) walks the volume and compares it with the rows by
 * size and mtime, then sha256, so nothing is ever silently missed.
 * Ignored: AT_IGNORE_DEFAULTS plus the workspace's .atelierignore
 * (gitignore syntax), symlinks (never followed, never stored), files over
 * MAX_FILE_SIZE, fsops' temp files.
 */
#ifndef SYNC_WATCH_H
#define SYNC_WATCH_H

#include <stdint.h>

#define WATCH_DEBOUNCE_MS 5 /* quiet time before a batch is taken in */
#define WATCH_BATCH_MAX 512 /* paths per batch */
#define WATCH_SESSIONS_MAX 8

int watch_init(void);
void watch_shutdown(void);

/* Watch the volume dir of workspace ws (its live sessions get the events);
 * a watch already there gets the new session list. */
int watch_start(const char *ws, const char *dir, const char sessions[][37], int nsessions);
void watch_stop(const char *ws);
/* 1 if ws is watched here. */
int watch_has(const char *ws);
/* Calls fn for every watched workspace (for the watch set's sweep). */
void watch_each(void (*fn)(const char *ws, void *arg), void *arg);

/* Look at path soon (a push found the sandbox had changed it). */
void watch_dirty(const char *ws, const char *path);
/* A push wrote path, leaving it at size and mtime_ns (any thread, under the
 * volume's lock): the events it causes need no look-up. */
void watch_own_write(const char *ws, const char *path, int64_t size, int64_t mtime_ns);

#endif
