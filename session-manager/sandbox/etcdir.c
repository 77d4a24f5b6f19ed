/* A prepared /etc for sandboxes (bwrap.h, at_bwrap_prepare_etc): copies of
 * what a workspace reads from the host's /etc, in one directory bwrap binds
 * once, instead of one bind per file. Every bind costs bwrap a full read of
 * /proc/self/mountinfo, whose size grows with the host's mounts (one per
 * running sandbox's volume): fewer binds keep the launch fast and flat as
 * sandboxes add up. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "etcdir.h"
#include "sbx_util.h"

static void mix(sbx_copy_budget_t *b, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        b->hash = (b->hash ^ p[i]) * 1099511628211ull;
}

/* Copy one regular file (no symlink followed), mode kept. */
static at_err_t copy_file(const char *src, const char *dst, mode_t mode, sbx_copy_budget_t *b,
                          char *errbuf, size_t errlen)
{
    int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return errno == EACCES ? AT_OK : sbx_fail_errno(errbuf, errlen, errno, "open %s", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    if (out < 0) {
        int e = errno;
        close(in);
        return sbx_fail_errno(errbuf, errlen, e, "create %s", dst);
    }
    char buf[16384];
    at_err_t err = AT_OK;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0 || b->bytes + (size_t)n > b->max_bytes) {
            err = n < 0 ? sbx_fail_errno(errbuf, errlen, errno, "read %s", src)
                        : sbx_fail(errbuf, errlen, AT_ETOOBIG, "copy of %s: over %zu bytes", src,
                                   b->max_bytes);
            break;
        }
        b->bytes += (size_t)n;
        mix(b, buf, (size_t)n);
        if (write(out, buf, (size_t)n) != n) {
            err = sbx_fail_errno(errbuf, errlen, errno, "write %s", dst);
            break;
        }
    }
    close(in);
    if (close(out) != 0 && err == AT_OK)
        err = sbx_fail_errno(errbuf, errlen, errno, "close %s", dst);
    return err;
}

at_err_t sbx_copy_tree(const char *src, const char *dst, sbx_copy_budget_t *b, char *errbuf,
                       size_t errlen)
{
    struct stat st;
    if (lstat(src, &st) != 0)
        return errno == ENOENT ? AT_OK : sbx_fail_errno(errbuf, errlen, errno, "lstat %s", src);
    if (++b->entries > b->max_entries)
        return sbx_fail(errbuf, errlen, AT_ETOOBIG, "copy of %s: over %zu entries", src,
                        b->max_entries);
    const char *name = strrchr(dst, '/');
    mix(b, name ? name : dst, strlen(name ? name : dst) + 1);
    mix(b, &st.st_mode, sizeof st.st_mode);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof target - 1);
        if (n < 0)
            return sbx_fail_errno(errbuf, errlen, errno, "readlink %s", src);
        target[n] = '\0';
        mix(b, target, (size_t)n + 1);
        return symlink(target, dst) == 0 ? AT_OK
                                         : sbx_fail_errno(errbuf, errlen, errno, "symlink %s", dst);
    }
    /* what an unprivileged user could not read stays out (/etc/ssl/private) */
    if (!(st.st_mode & S_IROTH))
        return AT_OK;
    if (S_ISREG(st.st_mode))
        return copy_file(src, dst, st.st_mode, b, errbuf, errlen);
    if (!S_ISDIR(st.st_mode) || !(st.st_mode & S_IXOTH))
        return AT_OK; /* devices, sockets, fifos: never in a sandbox's /etc */
    if (mkdir(dst, 0700) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "mkdir %s", dst);
    DIR *d = opendir(src);
    if (!d)
        return sbx_fail_errno(errbuf, errlen, errno, "opendir %s", src);
    at_err_t err = AT_OK;
    struct dirent *de;
    while (err == AT_OK && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char s[PATH_MAX], t[PATH_MAX];
        if (snprintf(s, sizeof s, "%s/%s", src, de->d_name) >= (int)sizeof s ||
            snprintf(t, sizeof t, "%s/%s", dst, de->d_name) >= (int)sizeof t)
            err = sbx_fail(errbuf, errlen, AT_ETOOBIG, "path too long under %s", src);
        else
            err = sbx_copy_tree(s, t, b, errbuf, errlen);
    }
    closedir(d);
    if (err == AT_OK && chmod(dst, st.st_mode & 0777) != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "chmod %s", dst);
    return err;
}

void sbx_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                char sub[PATH_MAX];
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                    snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) < (int)sizeof sub)
                    sbx_remove_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}
