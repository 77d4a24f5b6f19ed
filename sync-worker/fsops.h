/*
 * The sync-worker's file operations on one workspace volume, relative to
 * the volume's root directory fd. Every path is resolved with openat2
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: a symlink
 * anywhere on the way (one the sandbox made, pointing out of the volume or
 * not) is never followed; the operation fails with ELOOP or EXDEV instead.
 * Paths are normalised workspace paths (at_path_confine). Blocking: run on
 * a pool thread, never on the loop. Return 0 or -errno.
 */
#ifndef SYNC_FSOPS_H
#define SYNC_FSOPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "atelier/crypto.h"

/* What a file holds now. */
typedef struct fs_file {
    char sha256[AT_SHA256_HEX + 1];
    int64_t size;
    int64_t mtime_ns;
    mode_t mode; /* permission bits */
} fs_file_t;

/* lstat of path: -ENOENT, else 0 with *st (a symlink is reported as one). */
int fs_lstat(int root, const char *path, struct stat *st);

/* A regular file's content, when at most max bytes: *data (malloc'd and
 * NUL-terminated, the caller frees; NULL for an empty file) and *f. -EFBIG when larger (f->size
 * set), -EISDIR / -ELOOP / -ENOENT as they come. */
int fs_read(int root, const char *path, size_t max, char **data, fs_file_t *f);

/* The sha256 of a regular file (streamed; any size): 0 with *f. */
int fs_hash(int root, const char *path, fs_file_t *f);

/* Replace path with data, atomically: a temp file in the same directory,
 * written, mode and owner set, fsync'd, renamed over path. Missing parent
 * folders are made (0755, owner uid/gid; -1 keeps the process's). *f (may
 * be NULL) describes what was written. */
int fs_write_atomic(int root, const char *path, const void *data, size_t len, mode_t mode,
                    uid_t uid, gid_t gid, fs_file_t *f);

/* mkdir -p path. */
int fs_mkdirs(int root, const char *path, uid_t uid, gid_t gid);

/* Remove path: a file, or a folder with everything in it. -ENOENT when gone. */
int fs_remove(int root, const char *path);

/* Rename from to to (parents of to made); replaces a file at to. */
int fs_rename(int root, const char *from, const char *to, uid_t uid, gid_t gid);

/* The temp files fs_write_atomic makes start with this: the watcher skips them. */
#define FS_TMP_PREFIX ".atelier-tmp-"

#endif
