/*
 * Workspace volumes with a disk quota: one sparse ext4 image per volume,
 * loop-mounted where the sandbox binds it.
 *
 * Layout under the deployment's WORKSPACE_BASE_PATH (base):
 *     <base>/<name>                 mount point (the workspace files)
 *     <base>/.images/<name>.img     sparse ext4 image, size = the quota
 * A name is one or two segments of [A-Za-z0-9_.-] (1..64 each, not "." or
 * ".."), e.g. "3f2a..." or "<user_id>/<workspace>". Two volumes must not
 * nest: do not use both "42" and "42/ws", or the second would appear inside
 * the first one's sandbox.
 *
 * Safety: base is trusted configuration (it may itself contain symlinks);
 * everything below it is walked component by component with O_NOFOLLOW and
 * openat, and mounts/umounts go through those fds, so a symlink planted under
 * base (a sandbox can write inside its own mounted volume) is never followed.
 *
 * Why images: a hard per-volume quota that needs no filesystem support from the
 * host, works on any host filesystem, and whose ENOSPC is seen inside the
 * sandbox exactly like a full disk. The image is sparse, so an empty 5 GiB
 * volume costs ~3 MiB of host disk. Freed blocks are not returned to the host
 * by themselves: at_volume_trim (FITRIM) punches them out of the image.
 *
 * All functions block (fork/exec of mkfs.ext4, mount(2), umount retries) and
 * keep no state: call them from a worker thread, any number at once. They need
 * CAP_SYS_ADMIN (root). Errors: at_err_t plus "what: path: reason" in errbuf.
 */
#ifndef ATELIER_SANDBOX_VOLUME_H
#define ATELIER_SANDBOX_VOLUME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atelier/err.h"

#define AT_VOLUME_DEFAULT_SIZE (5ULL << 30) /* client-api-v3.1: 5 GiB per workspace */
#define AT_VOLUME_MIN_SIZE (16ULL << 20)    /* mkfs.ext4 needs a few MiB; keep margin */
#define AT_VOLUME_MAX_SIZE (16ULL << 40)
#define AT_VOLUME_NAME_MAX 130 /* two 64-byte segments and a '/' */
#define AT_VOLUME_IMAGES ".images"

typedef struct {
    uint64_t total_bytes;  /* filesystem size (a little under the image size) */
    uint64_t used_bytes;   /* total - free */
    uint64_t avail_bytes;  /* what the sandbox can still write */
    uint64_t total_inodes; /* files + directories the volume can hold */
    uint64_t used_inodes;
} at_volume_usage_t;

/* 1 if name is a valid volume name. */
int at_volume_name_ok(const char *name);

/* Make the image: a sparse file of size_bytes formatted ext4 (no reserved
 * blocks, lazy inode table and journal init). Made under a temporary name and
 * renamed into place, so an image either exists complete or not at all. An
 * existing image is kept as it is (never reformatted) and that is AT_OK: create
 * is idempotent. Creates <base>/.images (and the user level) as needed. */
at_err_t at_volume_create(const char *base, const char *name, uint64_t size_bytes, char *errbuf,
                          size_t errlen);

/* Loop-mount the image at <base>/<name> (created if missing) with
 * nosuid,nodev,noatime, then chown the volume root to owner_uid:owner_gid (the
 * host ids the sandbox user maps to). Already mounted: only the chown, AT_OK.
 * The loop device is set up with autoclear, so it goes away with the mount. */
at_err_t at_volume_mount(const char *base, const char *name, uid_t owner_uid, gid_t owner_gid,
                         char *errbuf, size_t errlen);

/* Unmount <base>/<name>. Retries while busy up to timeout_ms, then detaches
 * lazily (MNT_DETACH: the filesystem goes when its last user does, and the
 * loop device with it). Not mounted: AT_OK. */
at_err_t at_volume_umount(const char *base, const char *name, int timeout_ms, char *errbuf,
                          size_t errlen);

/* 1 if <base>/<name> is a mount point (from /proc/self/mountinfo), else 0. */
int at_volume_is_mounted(const char *base, const char *name);

/* Space and inodes of a mounted volume (statvfs). */
at_err_t at_volume_usage(const char *base, const char *name, at_volume_usage_t *out, char *errbuf,
                         size_t errlen);

/* Keep `want` formatted images of size_bytes ready under base (made here,
 * one mkfs each, when fewer are there): at_volume_create of that size then
 * takes one by a rename instead of formatting. Blocking; call it off the
 * critical path (the local driver's spare thread does). */
at_err_t at_volume_fill_spares(const char *base, uint64_t size_bytes, int want, char *errbuf,
                               size_t errlen);

/* Unmount if mounted, remove the image and the empty mount point directory.
 * Missing pieces are fine (idempotent). The files are gone afterwards. */
at_err_t at_volume_destroy(const char *base, const char *name, int timeout_ms, char *errbuf,
                           size_t errlen);

/* Grow a volume to new_size (never shrinks): extends the image, then grows
 * ext4 to it: unmounted with resize2fs (a few ms), mounted online (loop
 * capacity refresh + EXT4_IOC_RESIZE_FS), which needs CAP_SYS_RESOURCE; where
 * root lacks it (containers) the online step fails with AT_EIO and the
 * filesystem grows at the next call made while the volume is unmounted. */
at_err_t at_volume_grow(const char *base, const char *name, uint64_t new_size, char *errbuf,
                        size_t errlen);

/* Return the mounted volume's free blocks to the host (FITRIM: the loop device
 * punches holes in the sparse image). Cheap to run from a periodic timer. */
at_err_t at_volume_trim(const char *base, const char *name, uint64_t *trimmed_bytes, char *errbuf,
                        size_t errlen);

/* Names of the volumes mounted under base (loop-backed ext4 mounts, from
 * /proc/self/mountinfo), for orphan cleanup. *names is malloc'd: free with
 * at_volume_list_free. */
at_err_t at_volume_list_mounted(const char *base, char ***names, size_t *n, char *errbuf,
                                size_t errlen);
void at_volume_list_free(char **names, size_t n);

#endif
