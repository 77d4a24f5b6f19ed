/*
 * atelier-extract: unpack a tar stream from stdin into one workspace volume,
 * and nothing outside it. The sync-worker pipes the workspace's files from
 * PostgreSQL through here (the `load` job), so the loop never touches the
 * disk and a hostile tree in the volume cannot redirect a write:
 *
 *   - as root it chroot()s into the volume and drops to the sandbox's
 *     uid/gid before reading a byte, so symlinks resolve inside the volume
 *     and files get the owner the sandbox sees;
 *   - libarchive's secure flags refuse "..", absolute paths and writing
 *     through a symlink in any case.
 *
 *   atelier-extract --root DIR [--uid N --gid N]
 *
 * Prints one JSON line: {"files":n,"folders":n,"bytes":n} or {"error":"..."}
 * (exit 1).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <grp.h>
#include <locale.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer reads /proc at exit, which is not there after chroot(). */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return 1;
}
#endif

static int fail(const char *what, const char *detail)
{
    /* detail comes from libarchive or strerror: no quotes to escape there in
     * practice, but keep the line valid JSON whatever it holds */
    printf("{\"error\":\"%s: ", what);
    for (const char *p = detail ? detail : ""; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar((unsigned char)*p < 0x20 ? ' ' : *p);
    }
    printf("\"}\n");
    return 1;
}

static int confine(const char *root, long uid, long gid)
{
    if (chdir(root) != 0)
        return fail("chdir", strerror(errno));
    if (geteuid() != 0)
        return 0; /* not root: the secure flags are the only guard */
    if (chroot(".") != 0 || chdir("/") != 0)
        return fail("chroot", strerror(errno));
    if (gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0))
        return fail("setgid", strerror(errno));
    if (uid >= 0 && setuid((uid_t)uid) != 0)
        return fail("setuid", strerror(errno));
    return 0;
}

int main(int argc, char **argv)
{
    const char *root = NULL;
    long uid = -1, gid = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--root"))
            root = argv[i + 1];
        else if (!strcmp(argv[i], "--uid"))
            uid = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--gid"))
            gid = strtol(argv[i + 1], NULL, 10);
    }
    if (!root || root[0] != '/') {
        fprintf(stderr, "usage: atelier-extract --root /abs/dir [--uid N --gid N] < tar\n");
        return 2;
    }
    /* pax names are UTF-8; write them as such (glibc's C.UTF-8 is built in,
     * so it works after chroot too) */
    setlocale(LC_CTYPE, "C.UTF-8");
    /* the volume's lock, which every sync-worker takes before it touches a
     * volume (push.c): no save is written under the load. Held (open,
     * inherited by nothing) until this process exits. */
    int lock = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock < 0 || flock(lock, LOCK_EX) != 0)
        return fail("lock", strerror(errno));
    if (confine(root, uid, gid) != 0)
        return 1;
    umask(022);

    struct archive *in = archive_read_new();
    struct archive *out = archive_write_disk_new();
    archive_read_support_format_tar(in);
    archive_write_disk_set_options(
        out, ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                 ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_PERM |
                 ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_UNLINK);
    if (archive_read_open_fd(in, 0, 65536) != ARCHIVE_OK)
        return fail("read", archive_error_string(in));
    long long files = 0, folders = 0, bytes = 0;
    int rc = 0;
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(in, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            rc = fail("read", archive_error_string(in));
            break;
        }
        const char *name = archive_entry_pathname(e);
        if (!name || !strcmp(name, ".") || !strcmp(name, "./")) {
            archive_read_data_skip(in); /* the volume root is the manager's */
            continue;
        }
        mode_t type = archive_entry_filetype(e);
        if (type != AE_IFREG && type != AE_IFDIR) {
            rc = fail("refused", archive_entry_pathname(e)); /* only files and folders */
            break;
        }
        if (geteuid() != 0 || uid < 0) {
            archive_entry_set_uid(e, (la_int64_t)getuid());
            archive_entry_set_gid(e, (la_int64_t)getgid());
        }
        if (archive_write_header(out, e) != ARCHIVE_OK) {
            rc = fail(archive_entry_pathname(e), archive_error_string(out));
            break;
        }
        const void *buf;
        size_t len;
        la_int64_t off;
        while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK) {
            if (archive_write_data_block(out, buf, len, off) != ARCHIVE_OK) {
                r = ARCHIVE_FATAL;
                break;
            }
            bytes += (long long)len;
        }
        if (r != ARCHIVE_EOF) {
            rc = fail(archive_entry_pathname(e), archive_error_string(out));
            break;
        }
        if (archive_write_finish_entry(out) != ARCHIVE_OK) {
            rc = fail(archive_entry_pathname(e), archive_error_string(out));
            break;
        }
        if (type == AE_IFDIR)
            folders++;
        else
            files++;
    }
    if (archive_write_close(out) != ARCHIVE_OK && rc == 0)
        rc = fail("close", archive_error_string(out));
    archive_write_free(out);
    archive_read_free(in);
    if (rc == 0)
        printf("{\"files\":%lld,\"folders\":%lld,\"bytes\":%lld}\n", files, folders, bytes);
    return rc;
}
