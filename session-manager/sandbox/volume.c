/*
 * Volumes: sparse ext4 images, loop-mounted. Every path below base is walked
 * with openat(O_NOFOLLOW), and mount/umount name their targets through those
 * fds (/proc/self/fd/N), so nothing a sandbox writes into a volume can redirect
 * a mount or an unlink (volume.h).
 */
#include "volume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "sbx_util.h"

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

#define SEG_MAX 64
#define MKFS_TIMEOUT_MS 60000
#define LOOP_TRIES 32
#ifndef LOOP_MAJOR
#define LOOP_MAJOR 7
#endif
#define PROC_FD_PATH 64

/* mkfs.ext4 options: no reserved blocks (the quota is all the user's), inode
 * tables and journal left as the sparse file's zeros instead of being written. */
static const char *const mkfs_paths[] = {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"};

/* A validated name split in its parts: "user/ws" -> dir "user", leaf "ws". */
typedef struct {
    char dir[SEG_MAX + 1]; /* "" for one-segment names */
    char leaf[SEG_MAX + 1];
} vname_t;

static int seg_ok(const char *s, size_t len)
{
    if (len == 0 || len > SEG_MAX || (len == 1 && s[0] == '.') ||
        (len == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

static int split_name(const char *name, vname_t *v)
{
    if (!name)
        return -1;
    const char *slash = strchr(name, '/');
    if (!slash) {
        if (!seg_ok(name, strlen(name)))
            return -1;
        v->dir[0] = '\0';
        at_strlcpy(v->leaf, name, sizeof v->leaf);
        return 0;
    }
    size_t dlen = (size_t)(slash - name);
    if (!seg_ok(name, dlen) || !seg_ok(slash + 1, strlen(slash + 1)))
        return -1;
    /* ".images" is ours at the top level */
    if (strncmp(name, AT_VOLUME_IMAGES, dlen) == 0 && dlen == strlen(AT_VOLUME_IMAGES))
        return -1;
    memcpy(v->dir, name, dlen);
    v->dir[dlen] = '\0';
    at_strlcpy(v->leaf, slash + 1, sizeof v->leaf);
    return 0;
}

int at_volume_name_ok(const char *name)
{
    vname_t v;
    if (split_name(name, &v) != 0)
        return 0;
    return v.dir[0] != '\0' || strcmp(v.leaf, AT_VOLUME_IMAGES) != 0;
}

static at_err_t check_name(const char *base, const char *name, vname_t *v, char *errbuf,
                           size_t errlen)
{
    if (!base || base[0] != '/')
        return sbx_fail(errbuf, errlen, AT_EINVAL, "volume: base must be an absolute path");
    if (!at_volume_name_ok(name) || split_name(name, v) != 0)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "volume: invalid name '%s'",
                        name ? name : "(null)");
    return AT_OK;
}

/* Open one directory below dirfd without following a symlink (optionally
 * creating it). Returns an O_PATH fd or -1 with errno. */
static int open_subdir(int dirfd, const char *seg, int create, mode_t mode)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = openat(dirfd, seg, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            struct stat st;
            if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) {
                close(fd);
                errno = ENOTDIR;
                return -1;
            }
            return fd;
        }
        if (errno != ENOENT || !create)
            return -1;
        if (mkdirat(dirfd, seg, mode) != 0 && errno != EEXIST)
            return -1;
    }
    errno = ENOENT;
    return -1;
}

/* The directory that holds the leaf: base[/top][/dir]. top is NULL for the
 * mount tree and ".images" for the image tree. */
static int open_parent(const char *base, const char *top, const vname_t *v, int create, mode_t mode,
                       char *errbuf, size_t errlen, at_err_t *err)
{
    int fd = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *err = sbx_fail_errno(errbuf, errlen, errno, "volume: open base %s", base);
        return -1;
    }
    const char *segs[2] = {top, v->dir[0] ? v->dir : NULL};
    char shown[PATH_MAX + 2 * SEG_MAX + 4]; /* the path walked so far, for messages */
    at_strlcpy(shown, base, sizeof shown);
    for (int i = 0; i < 2; i++) {
        if (!segs[i])
            continue;
        size_t used = strlen(shown);
        snprintf(shown + used, sizeof shown - used, "/%s", segs[i]);
        int next = open_subdir(fd, segs[i], create, mode);
        int e = errno;
        close(fd);
        if (next < 0) {
            *err = sbx_fail_errno(errbuf, errlen, e, "volume: open %s (symlinks refused)", shown);
            return -1;
        }
        fd = next;
    }
    *err = AT_OK;
    return fd;
}

static void image_leaf(const vname_t *v, char *out, size_t cap)
{
    snprintf(out, cap, "%s.img", v->leaf);
}

/* Open the volume's image file read-write (never through a symlink).
 * Returns the fd or -1 with *err set. */
static int open_image(const char *base, const char *name, const vname_t *v, char *errbuf,
                      size_t errlen, at_err_t *err)
{
    char leaf[SEG_MAX + 8];
    image_leaf(v, leaf, sizeof leaf);
    int ipfd = open_parent(base, AT_VOLUME_IMAGES, v, 0, 0, errbuf, errlen, err);
    if (ipfd < 0)
        return -1;
    int imgfd = openat(ipfd, leaf, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    close(ipfd);
    if (imgfd < 0)
        *err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: open image", name);
    return imgfd;
}

static const char *mkfs_binary(void)
{
    for (size_t i = 0; i < sizeof mkfs_paths / sizeof mkfs_paths[0]; i++)
        if (access(mkfs_paths[i], X_OK) == 0)
            return mkfs_paths[i];
    return NULL;
}

/* True if something is mounted on dirfd/leaf: its device differs from the parent's. */
static int mounted_at(int parentfd, const char *leaf)
{
    struct stat p, st;
    if (fstat(parentfd, &p) != 0 || fstatat(parentfd, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    return S_ISDIR(st.st_mode) && st.st_dev != p.st_dev;
}

/* ---- create ------------------------------------------------------------- */

static at_err_t format_image(int fd, uint64_t size, char *errbuf, size_t errlen)
{
    if (ftruncate(fd, (off_t)size) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "volume: truncate image to %llu bytes",
                              (unsigned long long)size);
    const char *mkfs = mkfs_binary();
    if (!mkfs)
        return sbx_fail(errbuf, errlen, AT_ECONFIG, "volume: mkfs.ext4 not found (e2fsprogs)");
    /* The helper reaches the file through our fd, never through a path a
     * sandbox could influence. */
    char target[PROC_FD_PATH];
    snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), fd);
    const char *argv[] = {
        mkfs, "-q",      "-F",   "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
        "-L", "atelier", target, NULL};
    at_err_t err = sbx_run(argv, MKFS_TIMEOUT_MS, errbuf, errlen);
    if (err)
        return err;
    /* The image is renamed into place next: its blocks must be on disk first
     * or a host crash could leave a named but unformatted image. */
    if (fdatasync(fd) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "volume: fdatasync image");
    return AT_OK;
}

/* ---- spares: images formatted ahead of need ------------------------------
 * <base>/.images/+spare/<size>-<random>.img ('+' is no volume name's
 * character, so no volume can live there). create takes one of the right
 * size by a rename (microseconds) instead of running mkfs (~10 ms). */

#define SPARE_DIR "+spare"

static int open_spares(const char *base, int create, char *errbuf, size_t errlen, at_err_t *err)
{
    vname_t v = {.dir = SPARE_DIR};
    return open_parent(base, AT_VOLUME_IMAGES, &v, create, 0700, errbuf, errlen, err);
}

/* Move a spare of size_bytes to pfd/leaf; 1 when one was taken. */
static int take_spare(const char *base, uint64_t size_bytes, int pfd, const char *leaf)
{
    char ignore[256], prefix[32];
    at_err_t err;
    int sfd = open_spares(base, 0, ignore, sizeof ignore, &err);
    if (sfd < 0)
        return 0;
    snprintf(prefix, sizeof prefix, "%llu-", (unsigned long long)size_bytes);
    int dfd = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    int taken = 0;
    struct dirent *de;
    while (d && !taken && (de = readdir(d)))
        taken = !strncmp(de->d_name, prefix, strlen(prefix)) &&
                renameat2(sfd, de->d_name, pfd, leaf, RENAME_NOREPLACE) == 0;
    if (d)
        closedir(d);
    else if (dfd >= 0)
        close(dfd);
    close(sfd);
    return taken;
}

at_err_t at_volume_fill_spares(const char *base, uint64_t size_bytes, int want, char *errbuf,
                               size_t errlen)
{
    size_bytes = (size_bytes + 4095) & ~4095ULL;
    if (size_bytes < AT_VOLUME_MIN_SIZE || size_bytes > AT_VOLUME_MAX_SIZE)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "volume spares: bad size %llu",
                        (unsigned long long)size_bytes);
    at_err_t err;
    int sfd = open_spares(base, 1, errbuf, errlen, &err);
    if (sfd < 0)
        return err;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%llu-", (unsigned long long)size_bytes);
    int have = 0, dfd = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d)))
        have += !strncmp(de->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    else if (dfd >= 0)
        close(dfd);
    for (err = AT_OK; !err && have < want; have++) {
        unsigned rnd;
        at_random_bytes(&rnd, sizeof rnd);
        char tmp[64], leaf[64];
        snprintf(tmp, sizeof tmp, ".tmp-%d-%08x", (int)getpid(), rnd);
        snprintf(leaf, sizeof leaf, "%s%08x.img", prefix, rnd);
        int fd = openat(sfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            err = sbx_fail_errno(errbuf, errlen, errno, "volume spares: create %s", tmp);
            break;
        }
        err = format_image(fd, size_bytes, errbuf, errlen);
        close(fd);
        if (!err && renameat(sfd, tmp, sfd, leaf) != 0)
            err = sbx_fail_errno(errbuf, errlen, errno, "volume spares: rename %s", leaf);
        unlinkat(sfd, tmp, 0);
    }
    close(sfd);
    return err;
}

at_err_t at_volume_create(const char *base, const char *name, uint64_t size_bytes, char *errbuf,
                          size_t errlen)
{
    vname_t v;
    at_err_t err = check_name(base, name, &v, errbuf, errlen);
    if (err)
        return err;
    if (size_bytes < AT_VOLUME_MIN_SIZE || size_bytes > AT_VOLUME_MAX_SIZE)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "volume %s: size %llu outside %llu..%llu bytes",
                        name, (unsigned long long)size_bytes,
                        (unsigned long long)AT_VOLUME_MIN_SIZE,
                        (unsigned long long)AT_VOLUME_MAX_SIZE);
    size_bytes = (size_bytes + 4095) & ~4095ULL;
    int pfd = open_parent(base, AT_VOLUME_IMAGES, &v, 1, 0700, errbuf, errlen, &err);
    if (pfd < 0)
        return err;
    char leaf[SEG_MAX + 8], tmp[SEG_MAX + 64];
    image_leaf(&v, leaf, sizeof leaf);
    if (faccessat(pfd, leaf, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
        close(pfd);
        return AT_OK; /* idempotent: never format over a user's files */
    }
    if (take_spare(base, size_bytes, pfd, leaf)) {
        close(pfd);
        at_info("msg=volume_created name=%s size=%llu spare=1", name,
                (unsigned long long)size_bytes);
        return AT_OK;
    }
    unsigned rnd;
    at_random_bytes(&rnd, sizeof rnd);
    snprintf(tmp, sizeof tmp, ".%s.tmp-%d-%08x", leaf, (int)getpid(), rnd);
    int fd = openat(pfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "volume: create %s/%s/%s", base,
                             AT_VOLUME_IMAGES, tmp);
        close(pfd);
        return err;
    }
    err = format_image(fd, size_bytes, errbuf, errlen);
    close(fd);
    if (!err && renameat2(pfd, tmp, pfd, leaf, RENAME_NOREPLACE) != 0 && errno != EEXIST)
        err = sbx_fail_errno(errbuf, errlen, errno, "volume: rename image into %s", leaf);
    unlinkat(pfd, tmp, 0); /* gone after a rename; removes the leftover otherwise */
    close(pfd);
    if (!err)
        at_info("msg=volume_created name=%s size=%llu", name, (unsigned long long)size_bytes);
    return err;
}

/* ---- mount --------------------------------------------------------------- */

/* Bind a free loop device to the image with autoclear; returns the open loop
 * fd (the device lives while it or a mount holds it) and its number. */
static int loop_attach(int imgfd, int *number, char *errbuf, size_t errlen, at_err_t *err)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
        *err = sbx_fail_errno(errbuf, errlen, errno, "volume: open /dev/loop-control");
        return -1;
    }
    for (int attempt = 0; attempt < LOOP_TRIES; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            *err = sbx_fail_errno(errbuf, errlen, errno, "volume: LOOP_CTL_GET_FREE");
            close(ctl);
            return -1;
        }
        char dev[32];
        snprintf(dev, sizeof dev, "/dev/loop%d", n);
        int lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0) {
            if (errno == ENOENT) {
                /* No node: in a container /dev is the runtime's own tmpfs and
                 * nothing creates it (make it: docker-compose.yml allows block
                 * major 7); on a host without udev it may come a moment later. */
                if (mknod(dev, S_IFBLK | 0600, makedev(LOOP_MAJOR, n)) != 0 && errno != EEXIST)
                    sbx_sleep_ms(1);
                continue;
            }
            *err = sbx_fail_errno(errbuf, errlen, errno, "volume: open %s", dev);
            close(ctl);
            return -1;
        }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (unsigned)imgfd;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
            close(ctl);
            *number = n;
            return lfd;
        }
        int e = errno;
        if (e == EINVAL || e == ENOTTY) { /* before Linux 5.8: the two-step API */
            struct loop_info64 info;
            memset(&info, 0, sizeof info);
            info.lo_flags = LO_FLAGS_AUTOCLEAR;
            if (ioctl(lfd, LOOP_SET_FD, imgfd) == 0) {
                if (ioctl(lfd, LOOP_SET_STATUS64, &info) == 0) {
                    close(ctl);
                    *number = n;
                    return lfd;
                }
                e = errno;
                ioctl(lfd, LOOP_CLR_FD, 0);
            } else {
                e = errno;
            }
        }
        close(lfd);
        if (e != EBUSY) { /* EBUSY: another thread or process took it first */
            *err = sbx_fail_errno(errbuf, errlen, e, "volume: bind %s to image", dev);
            close(ctl);
            return -1;
        }
    }
    close(ctl);
    *err = sbx_fail(errbuf, errlen, AT_EBUSY, "volume: no free loop device after %d tries",
                    LOOP_TRIES);
    return -1;
}

/* Give the volume root to the sandbox user, and drop mkfs' empty root-only
 * lost+found so the workspace looks empty. */
static at_err_t prepare_root(int parentfd, const char *leaf, uid_t uid, gid_t gid, char *errbuf,
                             size_t errlen)
{
    int rfd = openat(parentfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rfd < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "volume: open root %s", leaf);
    at_err_t err = AT_OK;
    if (fchown(rfd, uid, gid) != 0 || fchmod(rfd, 0755) != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "volume: chown root %s to %d:%d", leaf,
                             (int)uid, (int)gid);
    struct stat st;
    if (fstatat(rfd, "lost+found", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        st.st_uid == 0 && (st.st_mode & 07777) == 0700)
        unlinkat(rfd, "lost+found", AT_REMOVEDIR); /* fails harmlessly if not empty */
    close(rfd);
    return err;
}

/* Attach a loop device to imgfd and mount it on dirfd. */
static at_err_t mount_image(const char *name, int imgfd, int dirfd, char *errbuf, size_t errlen)
{
    at_err_t err;
    int number = -1;
    int lfd = loop_attach(imgfd, &number, errbuf, errlen, &err);
    if (lfd < 0)
        return err;
    char dev[32], target[PROC_FD_PATH];
    snprintf(dev, sizeof dev, "/dev/loop%d", number);
    snprintf(target, sizeof target, "/proc/self/fd/%d", dirfd);
    /* noinit_itable: the sparse image already reads as zeros, so the kernel's
     * background inode-table zeroing would only write (and allocate) blocks. */
    err = AT_OK;
    if (mount(dev, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME,
              "errors=remount-ro,noinit_itable") != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: mount %s", name, dev);
    close(lfd); /* the mount holds the device now; autoclear frees it with the mount */
    return err;
}

at_err_t at_volume_mount(const char *base, const char *name, uid_t owner_uid, gid_t owner_gid,
                         char *errbuf, size_t errlen)
{
    vname_t v;
    at_err_t err = check_name(base, name, &v, errbuf, errlen);
    if (err)
        return err;
    int imgfd = open_image(base, name, &v, errbuf, errlen, &err);
    if (imgfd < 0)
        return err;
    int mpfd = open_parent(base, NULL, &v, 1, 0755, errbuf, errlen, &err);
    if (mpfd < 0) {
        close(imgfd);
        return err;
    }
    int dirfd = open_subdir(mpfd, v.leaf, 1, 0755);
    if (dirfd < 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: mount point (symlinks refused)",
                             name);
    else if (!mounted_at(mpfd, v.leaf))
        err = mount_image(name, imgfd, dirfd, errbuf, errlen);
    if (!err)
        err = prepare_root(mpfd, v.leaf, owner_uid, owner_gid, errbuf, errlen);
    if (dirfd >= 0)
        close(dirfd);
    close(mpfd);
    close(imgfd);
    return err;
}

/* ---- umount / status ------------------------------------------------------ */

at_err_t at_volume_umount(const char *base, const char *name, int timeout_ms, char *errbuf,
                          size_t errlen)
{
    vname_t v;
    at_err_t err = check_name(base, name, &v, errbuf, errlen);
    if (err)
        return err;
    int mpfd = open_parent(base, NULL, &v, 0, 0, errbuf, errlen, &err);
    if (mpfd < 0)
        return err == AT_ENOTFOUND ? AT_OK : err;
    char target[PROC_FD_PATH + SEG_MAX + 2];
    snprintf(target, sizeof target, "/proc/self/fd/%d/%s", mpfd, v.leaf);
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    err = AT_OK;
    while (mounted_at(mpfd, v.leaf)) {
        if (umount2(target, UMOUNT_NOFOLLOW) == 0)
            continue; /* loop: a volume mounted twice comes off twice */
        if (errno != EBUSY) {
            err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: umount", name);
            break;
        }
        if (at_mono_us() > deadline) {
            /* Still in use: detach now, the kernel finishes when the last user goes. */
            at_warn("msg=volume_umount_lazy name=%s timeout_ms=%d", name, timeout_ms);
            if (umount2(target, UMOUNT_NOFOLLOW | MNT_DETACH) != 0)
                err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: umount (detach)", name);
            break;
        }
        sbx_sleep_ms(5);
    }
    close(mpfd);
    return err;
}

/* realpath(base) + "/" + name: how /proc/self/mountinfo spells the mount point. */
static int canonical_dir(const char *base, const char *name, char *out, size_t cap)
{
    char real[PATH_MAX];
    if (!realpath(base, real))
        return -1;
    int n = name ? snprintf(out, cap, "%s/%s", real, name) : snprintf(out, cap, "%s", real);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

typedef struct {
    const char *path;
    int found;
} find_mount_t;

static int find_mount_cb(const sbx_mount_t *m, void *arg)
{
    find_mount_t *f = arg;
    if (strcmp(m->mount_point, f->path) == 0)
        f->found = 1;
    return f->found;
}

int at_volume_is_mounted(const char *base, const char *name)
{
    vname_t v;
    char path[PATH_MAX + SEG_MAX * 2 + 4];
    if (!base || split_name(name, &v) != 0 || canonical_dir(base, name, path, sizeof path) != 0)
        return 0;
    find_mount_t f = {.path = path, .found = 0};
    sbx_mountinfo_scan(find_mount_cb, &f);
    return f.found;
}

/* Open the root of a mounted volume (fails with ENOTCONN-like AT_ENOTFOUND if
 * nothing is mounted there). */
static int open_mounted_root(const char *base, const char *name, int flags, char *errbuf,
                             size_t errlen, at_err_t *err)
{
    vname_t v;
    if ((*err = check_name(base, name, &v, errbuf, errlen)))
        return -1;
    int mpfd = open_parent(base, NULL, &v, 0, 0, errbuf, errlen, err);
    if (mpfd < 0)
        return -1;
    if (!mounted_at(mpfd, v.leaf)) {
        close(mpfd);
        *err = sbx_fail(errbuf, errlen, AT_ENOTFOUND, "volume %s: not mounted", name);
        return -1;
    }
    int fd = openat(mpfd, v.leaf, flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(mpfd);
    if (fd < 0)
        *err = sbx_fail_errno(errbuf, errlen, e, "volume %s: open root", name);
    return fd;
}

at_err_t at_volume_usage(const char *base, const char *name, at_volume_usage_t *out, char *errbuf,
                         size_t errlen)
{
    memset(out, 0, sizeof *out);
    at_err_t err;
    int fd = open_mounted_root(base, name, O_RDONLY, errbuf, errlen, &err);
    if (fd < 0)
        return err;
    struct statvfs sv;
    int rc = fstatvfs(fd, &sv);
    int e = errno;
    close(fd);
    if (rc != 0)
        return sbx_fail_errno(errbuf, errlen, e, "volume %s: statvfs", name);
    out->total_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
    out->used_bytes = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    out->avail_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    out->total_inodes = sv.f_files;
    out->used_inodes = sv.f_files - sv.f_ffree;
    return AT_OK;
}

/* ---- destroy / grow / trim ------------------------------------------------ */

/* Remove dirfd/seg if it is an empty directory; missing is fine. */
static int remove_empty_dir(int dirfd, const char *seg)
{
    if (unlinkat(dirfd, seg, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    return -1;
}

/* Drop the per-user level (base/<dir>, base/.images/<dir>) once it is empty. */
static void remove_user_level(const char *base, const vname_t *v)
{
    if (!v->dir[0])
        return;
    int bfd = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return;
    remove_empty_dir(bfd, v->dir);
    int ifd = open_subdir(bfd, AT_VOLUME_IMAGES, 0, 0);
    if (ifd >= 0) {
        remove_empty_dir(ifd, v->dir);
        close(ifd);
    }
    close(bfd);
}

at_err_t at_volume_destroy(const char *base, const char *name, int timeout_ms, char *errbuf,
                           size_t errlen)
{
    vname_t v;
    at_err_t err = check_name(base, name, &v, errbuf, errlen);
    if (err)
        return err;
    if ((err = at_volume_umount(base, name, timeout_ms, errbuf, errlen)))
        return err;
    char leaf[SEG_MAX + 8];
    image_leaf(&v, leaf, sizeof leaf);
    int ipfd = open_parent(base, AT_VOLUME_IMAGES, &v, 0, 0, errbuf, errlen, &err);
    if (ipfd >= 0) {
        if (unlinkat(ipfd, leaf, 0) != 0 && errno != ENOENT)
            err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: unlink image", name);
        close(ipfd);
    } else if (err != AT_ENOTFOUND) {
        return err;
    }
    if (err)
        return err;
    int mpfd = open_parent(base, NULL, &v, 0, 0, errbuf, errlen, &err);
    if (mpfd >= 0) {
        if (remove_empty_dir(mpfd, v.leaf) != 0)
            err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: rmdir mount point", name);
        close(mpfd);
    } else if (err == AT_ENOTFOUND) {
        err = AT_OK;
    }
    if (!err) {
        remove_user_level(base, &v);
        at_info("msg=volume_destroyed name=%s", name);
    }
    return err;
}

typedef struct {
    const char *path;
    char source[64];
} find_source_t;

static int find_source_cb(const sbx_mount_t *m, void *arg)
{
    find_source_t *f = arg;
    if (strcmp(m->mount_point, f->path) != 0)
        return 0;
    at_strlcpy(f->source, m->source, sizeof f->source);
    return 0; /* keep going: the last mount on a path is the visible one */
}

/* Grow an unmounted filesystem to its (already extended) image with resize2fs. */
static at_err_t resize_offline(int imgfd, char *errbuf, size_t errlen)
{
    static const char *const paths[] = {"/usr/sbin/resize2fs", "/sbin/resize2fs"};
    const char *bin = NULL;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0] && !bin; i++)
        if (access(paths[i], X_OK) == 0)
            bin = paths[i];
    if (!bin)
        return sbx_fail(errbuf, errlen, AT_ECONFIG, "volume: resize2fs not found (e2fsprogs)");
    char target[PROC_FD_PATH];
    snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), imgfd);
    /* -f: the image was cleanly unmounted by us; skip the e2fsck -f demand */
    const char *argv[] = {bin, "-f", target, NULL};
    return sbx_run(argv, MKFS_TIMEOUT_MS, errbuf, errlen);
}

at_err_t at_volume_grow(const char *base, const char *name, uint64_t new_size, char *errbuf,
                        size_t errlen)
{
    vname_t v;
    at_err_t err = check_name(base, name, &v, errbuf, errlen);
    if (err)
        return err;
    if (new_size > AT_VOLUME_MAX_SIZE)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "volume %s: size %llu over the maximum", name,
                        (unsigned long long)new_size);
    new_size = (new_size + 4095) & ~4095ULL;
    int imgfd = open_image(base, name, &v, errbuf, errlen, &err);
    if (imgfd < 0)
        return err;
    struct stat st;
    if (fstat(imgfd, &st) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: stat image", name);
        close(imgfd);
        return err;
    }
    /* Never shrink; an image already big enough still gets its filesystem
     * grown below (a previous online grow may have failed half-way). */
    if ((uint64_t)st.st_size < new_size && ftruncate(imgfd, (off_t)new_size) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: extend image", name);
        close(imgfd);
        return err;
    }
    if (!at_volume_is_mounted(base, name)) {
        err = resize_offline(imgfd, errbuf, errlen);
        close(imgfd);
        if (!err)
            at_info("msg=volume_grown name=%s size=%llu online=0", name,
                    (unsigned long long)new_size);
        return err;
    }
    close(imgfd);
    char path[PATH_MAX + SEG_MAX * 2 + 4];
    if (canonical_dir(base, name, path, sizeof path) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "volume %s: realpath", name);
    find_source_t f = {.path = path, .source = ""};
    sbx_mountinfo_scan(find_source_cb, &f);
    if (strncmp(f.source, "/dev/loop", 9) != 0)
        return sbx_fail(errbuf, errlen, AT_EIO, "volume %s: not loop-mounted (%s)", name, f.source);
    int lfd = open(f.source, O_RDONLY | O_CLOEXEC);
    if (lfd < 0 || ioctl(lfd, LOOP_SET_CAPACITY, 0) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: LOOP_SET_CAPACITY %s", name,
                             f.source);
        if (lfd >= 0)
            close(lfd);
        return err;
    }
    close(lfd);
    int rfd = open_mounted_root(base, name, O_RDONLY, errbuf, errlen, &err);
    if (rfd < 0)
        return err;
    struct statvfs sv;
    if (fstatvfs(rfd, &sv) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: statvfs", name);
    } else {
        uint64_t blocks =
            (uint64_t)((uint64_t)st.st_size > new_size ? (uint64_t)st.st_size : new_size) /
            sv.f_frsize;
        if (ioctl(rfd, EXT4_IOC_RESIZE_FS, &blocks) != 0)
            err = sbx_fail_errno(errbuf, errlen, errno,
                                 "volume %s: online resize to %llu blocks (needs "
                                 "CAP_SYS_RESOURCE; or grow it while unmounted)",
                                 name, (unsigned long long)blocks);
    }
    close(rfd);
    if (!err)
        at_info("msg=volume_grown name=%s size=%llu online=1", name, (unsigned long long)new_size);
    return err;
}

at_err_t at_volume_trim(const char *base, const char *name, uint64_t *trimmed_bytes, char *errbuf,
                        size_t errlen)
{
    if (trimmed_bytes)
        *trimmed_bytes = 0;
    at_err_t err;
    int fd = open_mounted_root(base, name, O_RDONLY, errbuf, errlen, &err);
    if (fd < 0)
        return err;
    struct fstrim_range range = {.start = 0, .len = UINT64_MAX, .minlen = 0};
    if (ioctl(fd, FITRIM, &range) != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "volume %s: FITRIM", name);
    else if (trimmed_bytes)
        *trimmed_bytes = range.len;
    close(fd);
    return err;
}

/* ---- listing ------------------------------------------------------------- */

typedef struct {
    const char *prefix; /* canonical base + "/" */
    size_t plen;
    char **names;
    size_t n, cap;
    int oom;
} list_t;

static int list_cb(const sbx_mount_t *m, void *arg)
{
    list_t *l = arg;
    if (strcmp(m->fstype, "ext4") != 0 || strncmp(m->source, "/dev/loop", 9) != 0 ||
        strncmp(m->mount_point, l->prefix, l->plen) != 0)
        return 0;
    const char *name = m->mount_point + l->plen;
    if (!at_volume_name_ok(name))
        return 0;
    if (sbx_names_has(l->names, l->n, name))
        return 0;
    if (sbx_names_add(&l->names, &l->n, &l->cap, name) != 0) {
        l->oom = 1;
        return 1;
    }
    return 0;
}

void at_volume_list_free(char **names, size_t n)
{
    sbx_names_free(names, n);
}

at_err_t at_volume_list_mounted(const char *base, char ***names, size_t *n, char *errbuf,
                                size_t errlen)
{
    *names = NULL;
    *n = 0;
    char prefix[PATH_MAX + 2];
    if (!base || canonical_dir(base, NULL, prefix, sizeof prefix - 1) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "volume: realpath %s", base ? base : "(null)");
    strcat(prefix, "/");
    list_t l = {.prefix = prefix, .plen = strlen(prefix)};
    if (sbx_mountinfo_scan(list_cb, &l) != 0 || l.oom) {
        int e = l.oom ? ENOMEM : errno;
        at_volume_list_free(l.names, l.n);
        return sbx_fail_errno(errbuf, errlen, e, "volume: list mounts under %s", base);
    }
    *names = l.names;
    *n = l.n;
    return AT_OK;
}
