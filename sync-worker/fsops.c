#include "fsops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "atelier/path.h"
#include "atelier/util.h"

#define CHUNK 65536
#define REMOVE_DEPTH_MAX 256 /* folders deeper than this are left (paths end at 4096 bytes) */

static int neg(void)
{
    return errno ? -errno : -EIO;
}

/* openat2 beneath root, no symlinks at all; path "" is root itself. */
static int open_beneath(int root, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)flags | O_CLOEXEC,
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, root, *path ? path : ".", &how, sizeof how);
    return fd < 0 ? neg() : (int)fd;
}

/* The folder holding path ("a/b" for "a/b/c", the root for "c"), opened
 * O_PATH beneath root; *name is path's last segment. With make, the folder
 * is made first (fs_mkdirs). An fd or -errno. */
static int open_parent(int root, const char *path, const char **name, int make, uid_t uid,
                       gid_t gid)
{
    char parent[AT_PATH_MAX + 1];
    const char *slash = strrchr(path, '/');
    if (strlen(path) > AT_PATH_MAX || !*path)
        return -EINVAL;
    size_t n = slash ? (size_t)(slash - path) : 0;
    memcpy(parent, path, n);
    parent[n] = '\0';
    *name = slash ? slash + 1 : path;
    int rc = make && n ? fs_mkdirs(root, parent, uid, gid) : 0;
    return rc ? rc : open_beneath(root, parent, O_PATH | O_DIRECTORY, 0);
}

static void fill(fs_file_t *f, const struct stat *st)
{
    f->size = st->st_size;
    f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    f->mode = st->st_mode & 07777;
}

static void hex(const unsigned char md[32], char out[AT_SHA256_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[AT_SHA256_HEX] = '\0';
}

int fs_lstat(int root, const char *path, struct stat *st)
{
    const char *name;
    int dir = open_parent(root, path, &name, 0, 0, 0);
    if (dir < 0)
        return dir;
    int rc = fstatat(dir, name, st, AT_SYMLINK_NOFOLLOW) ? neg() : 0;
    close(dir);
    return rc;
}

/* A regular file opened for reading, never through a symlink. */
static int open_regular(int root, const char *path, struct stat *st)
{
    int fd = open_beneath(root, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
    if (fd < 0)
        return fd;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        int e = S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
        close(fd);
        return e;
    }
    return fd;
}

int fs_read(int root, const char *path, size_t max, char **data, fs_file_t *f)
{
    struct stat st;
    *data = NULL;
    int fd = open_regular(root, path, &st);
    if (fd < 0)
        return fd;
    fill(f, &st);
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    /* read to the end, not to st_size: the file may be growing */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : -ENOMEM;
    while (!rc) {
        if (len == cap) {
            if (cap > max) {
                rc = -EFBIG;
                break;
            }
            char *b = realloc(buf, cap * 2);
            if (!b) {
                rc = -ENOMEM;
                break;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = neg();
        else if (n == 0)
            break;
        else
            len += (size_t)n;
    }
    if (!rc && len > max)
        rc = -EFBIG;
    if (!rc && len == cap) { /* room for the NUL text users need */
        char *b = realloc(buf, cap + 1);
        if (b)
            buf = b;
        else
            rc = -ENOMEM;
    }
    if (!rc)
        buf[len] = '\0';
    if (!rc && fstat(fd, &st) == 0)
        fill(f, &st);
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    f->size = (int64_t)len;
    at_sha256_hex(buf, len, f->sha256);
    if (len == 0) {
        free(buf);
        buf = NULL;
    }
    *data = buf;
    return 0;
}

int fs_hash(int root, const char *path, fs_file_t *f)
{
    struct stat st;
    int fd = open_regular(root, path, &st);
    if (fd < 0)
        return fd;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *buf = malloc(CHUNK);
    int rc = md && buf && EVP_DigestInit_ex(md, EVP_sha256(), NULL) ? 0 : -ENOMEM;
    int64_t total = 0;
    while (!rc) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = neg();
        else if (n == 0)
            break;
        else if (!EVP_DigestUpdate(md, buf, (size_t)n))
            rc = -EIO;
        else
            total += n;
    }
    unsigned char out[32];
    unsigned int olen = 0;
    if (!rc && !EVP_DigestFinal_ex(md, out, &olen))
        rc = -EIO;
    if (!rc && fstat(fd, &st) == 0) {
        fill(f, &st);
        f->size = total;
        hex(out, f->sha256);
    }
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return rc;
}

int fs_mkdirs(int root, const char *path, uid_t uid, gid_t gid)
{
    char cur[AT_PATH_MAX + 1];
    size_t n = strlen(path);
    if (n > AT_PATH_MAX)
        return -EINVAL;
    for (size_t i = 0; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        if (i == 0)
            continue;
        memcpy(cur, path, i);
        cur[i] = '\0';
        const char *name;
        int dir = open_parent(root, cur, &name, 0, 0, 0);
        if (dir < 0)
            return dir;
        int rc = mkdirat(dir, name, 0755);
        if (rc == 0 && (uid != (uid_t)-1 || gid != (gid_t)-1))
            rc = fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW);
        int e = rc ? errno : 0;
        close(dir);
        if (rc && e != EEXIST)
            return -e;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return neg();
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_write_atomic(int root, const char *path, const void *data, size_t len, mode_t mode,
                    uid_t uid, gid_t gid, fs_file_t *f)
{
    const char *name;
    int rc, dir = open_parent(root, path, &name, 1, uid, gid);
    if (dir < 0)
        return dir;
    char tmp[64];
    int fd = -1;
    for (int i = 0; i < 8 && fd < 0; i++) {
        char rnd[20];
        at_random_token("", 9, rnd, sizeof rnd);
        snprintf(tmp, sizeof tmp, FS_TMP_PREFIX "%s", rnd);
        fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        rc = neg();
        close(dir);
        return rc;
    }
    rc = write_all(fd, data, len);
    if (!rc && fchmod(fd, mode & 07777) != 0)
        rc = neg();
    if (!rc && (uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0)
        rc = neg();
    if (!rc && fsync(fd) != 0)
        rc = neg();
    struct stat st;
    if (!rc && fstat(fd, &st) != 0)
        rc = neg();
    close(fd);
    /* rename replaces whatever is at name, a symlink included, without
     * following it; a folder there makes it fail (EISDIR) */
    if (!rc && renameat(dir, tmp, dir, name) != 0)
        rc = neg();
    if (rc)
        unlinkat(dir, tmp, 0);
    close(dir);
    if (!rc && f) {
        fill(f, &st);
        at_sha256_hex(data, len, f->sha256);
    }
    return rc;
}

/* Everything in the folder dir (an fd of it), then nothing: depth-first. */
static int empty_dir(int dir, int depth)
{
    if (depth > REMOVE_DEPTH_MAX)
        return -ELOOP;
    int fd = dup(dir);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return neg();
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (unlinkat(dir, e->d_name, 0) == 0 || errno == ENOENT)
            continue;
        if (errno != EISDIR && errno != EPERM) {
            rc = neg();
            continue;
        }
        int sub = openat(dir, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            rc = neg();
            continue;
        }
        int r = empty_dir(sub, depth + 1);
        close(sub);
        if (r == 0 && unlinkat(dir, e->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT)
            r = neg();
        if (r)
            rc = r;
    }
    closedir(d);
    return rc;
}

int fs_remove(int root, const char *path)
{
    const char *name;
    int rc, dir = open_parent(root, path, &name, 0, 0, 0);
    if (dir < 0)
        return dir;
    if (unlinkat(dir, name, 0) == 0) {
        close(dir);
        return 0;
    }
    if (errno != EISDIR && errno != EPERM) {
        rc = neg();
        close(dir);
        return rc;
    }
    int sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    rc = sub < 0 ? neg() : empty_dir(sub, 0);
    if (sub >= 0)
        close(sub);
    if (!rc && unlinkat(dir, name, AT_REMOVEDIR) != 0)
        rc = neg();
    close(dir);
    return rc;
}

int fs_rename(int root, const char *from, const char *to, uid_t uid, gid_t gid)
{
    const char *fname, *tname;
    int fd = open_parent(root, from, &fname, 0, 0, 0);
    if (fd < 0)
        return fd;
    int td = open_parent(root, to, &tname, 1, uid, gid);
    if (td < 0) {
        close(fd);
        return td;
    }
    int rc = renameat(fd, fname, td, tname) != 0 ? neg() : 0;
    close(fd);
    close(td);
    return rc;
}
