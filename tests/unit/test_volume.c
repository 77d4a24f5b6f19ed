/*
 * Quota'd volumes on the real kernel: a sparse ext4 image is made, loop-mounted
 * and chowned; a file written stays across umount/mount; filling past the size
 * gives ENOSPC; umount leaves no loop device (losetup -a); destroy leaves
 * nothing. Symlinks planted under the base are never followed. Everything lives
 * under a mkdtemp base (/tmp/hsbx-vol-*); the teardown detaches whatever is
 * still mounted there and removes the tree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/util.h"
#include "volume.h"
#include "sandbox_fixture.h"

#define TIMEOUT_MS 5000
#define SMALL (64ULL << 20)
#define OWNER 65534

static char g_base[64];

static int missing_feature(void)
{
    if (geteuid() != 0) {
        print_message("skipped: needs root (loop devices and mount)\n");
        return 1;
    }
    if (access("/dev/loop-control", R_OK | W_OK) != 0) {
        print_message("skipped: /dev/loop-control not usable: %s\n", strerror(errno));
        return 1;
    }
    if (access("/usr/sbin/mkfs.ext4", X_OK) != 0 && access("/sbin/mkfs.ext4", X_OK) != 0) {
        print_message("skipped: mkfs.ext4 missing (e2fsprogs)\n");
        return 1;
    }
    return 0;
}

#define REQUIRE_FEATURES()                                                                         \
    do {                                                                                           \
        if (missing_feature())                                                                     \
            skip();                                                                                \
    } while (0)

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_base, sizeof g_base, "/tmp/hsbx-vol-XXXXXX");
    if (!mkdtemp(g_base))
        return -1;
    chmod(g_base, 0755);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char **names = NULL;
    size_t n = 0;
    if (at_volume_list_mounted(g_base, &names, &n, g_err, sizeof g_err) == AT_OK) {
        for (size_t i = 0; i < n; i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", g_base, names[i]);
            umount2(path, MNT_DETACH);
        }
        at_volume_list_free(names, n);
    }
    /* FTW_MOUNT: never walk into anything still mounted */
    rm_tree(g_base);
    return 0;
}

/* The loop device behind a mount point ("" when not mounted). */
static void loop_of(const char *dir, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char mp[1024], src[256];
        const char *dash = strstr(line, " - ");
        if (sscanf(line, "%*s %*s %*s %*s %1023s", mp) == 1 && dash &&
            sscanf(dash, " - %*s %255s", src) == 1 && strcmp(mp, dir) == 0)
            at_strlcpy(out, src, cap);
    }
    fclose(f);
}

/* True if `losetup -a` mentions text. */
static int losetup_mentions(const char *text)
{
    FILE *p = popen("losetup -a 2>/dev/null", "r");
    if (!p)
        return 0;
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, p))
        found |= strstr(line, text) != NULL;
    pclose(p);
    return found;
}

static void test_names(void **state)
{
    (void)state;
    assert_true(at_volume_name_ok("ws1"));
    assert_true(at_volume_name_ok("42/workspace"));
    assert_false(at_volume_name_ok(""));
    assert_false(at_volume_name_ok("a/b/c"));
    assert_false(at_volume_name_ok("../x"));
    assert_false(at_volume_name_ok("a/.."));
    assert_false(at_volume_name_ok("/abs"));
    assert_false(at_volume_name_ok("a//b"));
    assert_false(at_volume_name_ok(".images"));
    assert_false(at_volume_name_ok(".images/x"));
    assert_false(at_volume_name_ok("sp ace"));
    assert_int_equal(at_volume_create("relative/base", "x", SMALL, g_err, sizeof g_err), AT_EINVAL);
    assert_int_equal(at_volume_create(g_base, "x", 1024, g_err, sizeof g_err), AT_EINVAL);
}

static void test_quota_lifecycle(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    const char *name = "small";
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", g_base, name);

    int64_t t0 = at_mono_us();
    CHECK(at_volume_create(g_base, name, SMALL, g_err, sizeof g_err));
    double create_ms = ms_since(t0);
    t0 = at_mono_us();
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
    double mount_ms = ms_since(t0);
    assert_true(at_volume_is_mounted(g_base, name));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_uid, OWNER);
    assert_int_equal(st.st_gid, OWNER);
    char path[512];
    snprintf(path, sizeof path, "%s/lost+found", dir);
    assert_int_not_equal(access(path, F_OK), 0); /* the workspace starts empty */

    at_volume_usage_t u;
    CHECK(at_volume_usage(g_base, name, &u, g_err, sizeof g_err));
    assert_true(u.total_bytes > (SMALL * 8) / 10 && u.total_bytes <= SMALL);
    assert_true(u.total_inodes > 1000);

    snprintf(path, sizeof path, "%s/hello.txt", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("hello from the host\n", f);
    assert_int_equal(fclose(f), 0);

    /* fill it: ENOSPC before the image size */
    snprintf(path, sizeof path, "%s/big", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char chunk[1 << 20];
    memset(chunk, 'z', sizeof chunk);
    uint64_t written = 0;
    int werr = 0;
    for (int i = 0; i < 128; i++) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n < 0) {
            werr = errno;
            break;
        }
        written += (uint64_t)n;
        if ((size_t)n < sizeof chunk) {
            n = write(fd, chunk, sizeof chunk);
            werr = n < 0 ? errno : 0;
            break;
        }
    }
    if (!werr && fsync(fd) != 0)
        werr = errno;
    close(fd);
    print_message("filled %.1f MiB of a 64 MiB volume, then: %s\n", written / 1048576.0,
                  strerror(werr));
    assert_int_equal(werr, ENOSPC);
    assert_true(written > (SMALL * 7) / 10 && written <= SMALL);
    CHECK(at_volume_usage(g_base, name, &u, g_err, sizeof g_err));
    assert_true(u.avail_bytes < (2u << 20));
    unlink(path);

    /* umount; the file survives a remount (sleep/wake keeps the volume) */
    char loop[64];
    loop_of(dir, loop, sizeof loop);
    assert_true(strncmp(loop, "/dev/loop", 9) == 0);
    t0 = at_mono_us();
    CHECK(at_volume_umount(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
    double umount_ms = ms_since(t0);
    assert_false(at_volume_is_mounted(g_base, name));
    CHECK(at_volume_umount(g_base, name, TIMEOUT_MS, g_err, sizeof g_err)); /* idempotent */
    CHECK(at_volume_create(g_base, name, SMALL, g_err, sizeof g_err));      /* keeps the image */
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err)); /* idempotent */
    snprintf(path, sizeof path, "%s/hello.txt", dir);
    char line[64] = "";
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "hello from the host\n");

    t0 = at_mono_us();
    CHECK(at_volume_destroy(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
    double destroy_ms = ms_since(t0);
    assert_false(at_volume_is_mounted(g_base, name));
    assert_int_not_equal(access(dir, F_OK), 0);
    snprintf(path, sizeof path, "%s/.images/%s.img", g_base, name);
    assert_int_not_equal(access(path, F_OK), 0);
    /* the loop device went with the mount (autoclear) */
    snprintf(path, sizeof path, "%s/.images/%s.img", g_base, name);
    assert_false(losetup_mentions(path));
    CHECK(at_volume_destroy(g_base, name, TIMEOUT_MS, g_err, sizeof g_err)); /* idempotent */
    print_message("timing 64MiB create_ms=%.1f mount_ms=%.1f umount_ms=%.1f destroy_ms=%.1f\n",
                  create_ms, mount_ms, umount_ms, destroy_ms);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The default 5 GiB volume, timed over several rounds. */
static void test_default_size_timing(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    enum { N = 10 };
    double c[N], m[N], um[N], d[N];
    uint64_t disk_kib = 0;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "five-%d", i);
        int64_t t0 = at_mono_us();
        CHECK(at_volume_create(g_base, name, AT_VOLUME_DEFAULT_SIZE, g_err, sizeof g_err));
        c[i] = ms_since(t0);
        t0 = at_mono_us();
        CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
        m[i] = ms_since(t0);
        if (i == 0) {
            at_volume_usage_t u;
            CHECK(at_volume_usage(g_base, name, &u, g_err, sizeof g_err));
            assert_true(u.total_bytes > (AT_VOLUME_DEFAULT_SIZE * 9) / 10);
            print_message("5 GiB image: %.0f MiB usable, %llu inodes\n", u.avail_bytes / 1048576.0,
                          (unsigned long long)u.total_inodes);
            char img[256];
            snprintf(img, sizeof img, "%s/.images/%s.img", g_base, name);
            struct stat st;
            assert_int_equal(stat(img, &st), 0);
            disk_kib = (uint64_t)st.st_blocks / 2;
        }
        t0 = at_mono_us();
        CHECK(at_volume_umount(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
        um[i] = ms_since(t0);
        t0 = at_mono_us();
        CHECK(at_volume_destroy(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
        d[i] = ms_since(t0);
    }
    qsort(c, N, sizeof c[0], cmp_double);
    qsort(m, N, sizeof m[0], cmp_double);
    qsort(um, N, sizeof um[0], cmp_double);
    qsort(d, N, sizeof d[0], cmp_double);
    print_message("timing 5GiB n=%d create p50=%.1fms max=%.1fms | mount p50=%.1fms max=%.1fms | "
                  "umount p50=%.1fms max=%.1fms | destroy p50=%.1fms max=%.1fms | host disk "
                  "of an empty image %llu KiB\n",
                  N, c[N / 2], c[N - 1], m[N / 2], m[N - 1], um[N / 2], um[N - 1], d[N / 2],
                  d[N - 1], (unsigned long long)disk_kib);
}

static void test_two_level_and_list(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    CHECK(at_volume_create(g_base, "u1/ws", SMALL, g_err, sizeof g_err));
    CHECK(at_volume_create(g_base, "solo", SMALL, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, "u1/ws", OWNER, OWNER, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, "solo", OWNER, OWNER, g_err, sizeof g_err));
    char **names = NULL;
    size_t n = 0;
    CHECK(at_volume_list_mounted(g_base, &names, &n, g_err, sizeof g_err));
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        seen += strcmp(names[i], "u1/ws") == 0 || strcmp(names[i], "solo") == 0;
    at_volume_list_free(names, n);
    assert_int_equal(seen, 2);
    CHECK(at_volume_destroy(g_base, "u1/ws", TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_volume_destroy(g_base, "solo", TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_volume_list_mounted(g_base, &names, &n, g_err, sizeof g_err));
    assert_int_equal(n, 0);
    at_volume_list_free(names, n);
    char path[256];
    snprintf(path, sizeof path, "%s/u1", g_base); /* the empty user level goes too */
    assert_int_not_equal(access(path, F_OK), 0);
}

/* A symlink where a mount point or a user level should be is refused, and
 * nothing gets mounted on its target. */
static void test_symlinks_not_followed(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    char target[256], link[256];
    snprintf(target, sizeof target, "%s/target", g_base);
    assert_int_equal(mkdir(target, 0755), 0);
    CHECK(at_volume_create(g_base, "evil", SMALL, g_err, sizeof g_err));
    snprintf(link, sizeof link, "%s/evil", g_base);
    assert_int_equal(symlink(target, link), 0);
    at_err_t rc = at_volume_mount(g_base, "evil", OWNER, OWNER, g_err, sizeof g_err);
    print_message("mount through a symlink: %d: %s\n", (int)rc, g_err);
    assert_int_not_equal(rc, AT_OK);
    assert_false(at_volume_is_mounted(g_base, "target"));

    /* a user level that is a symlink */
    CHECK(at_volume_create(g_base, "u2/ws", SMALL, g_err, sizeof g_err));
    snprintf(link, sizeof link, "%s/u2", g_base);
    assert_int_equal(symlink(target, link), 0);
    assert_int_not_equal(at_volume_mount(g_base, "u2/ws", OWNER, OWNER, g_err, sizeof g_err),
                         AT_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/ws", target);
    assert_int_not_equal(access(path, F_OK), 0); /* not even the mount point was made there */

    /* umount and destroy through the symlink touch nothing behind it */
    CHECK(at_volume_umount(g_base, "evil", TIMEOUT_MS, g_err, sizeof g_err));
    unlink(link);
    snprintf(link, sizeof link, "%s/evil", g_base);
    unlink(link);
    CHECK(at_volume_destroy(g_base, "evil", TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_volume_destroy(g_base, "u2/ws", TIMEOUT_MS, g_err, sizeof g_err));
    assert_int_equal(access(target, F_OK), 0);
    rmdir(target);
}

static void test_grow_and_trim(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    const char *name = "grow";
    CHECK(at_volume_create(g_base, name, SMALL, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
    at_volume_usage_t before, after;
    CHECK(at_volume_usage(g_base, name, &before, g_err, sizeof g_err));
    /* online growth needs CAP_SYS_RESOURCE, which containers often drop */
    char why[512] = "";
    at_err_t rc = at_volume_grow(g_base, name, 2 * SMALL, why, sizeof why);
    CHECK(at_volume_usage(g_base, name, &after, g_err, sizeof g_err));
    if (rc == AT_OK) {
        print_message("online grow: %.1f -> %.1f MiB\n", before.total_bytes / 1048576.0,
                      after.total_bytes / 1048576.0);
        assert_true(after.total_bytes > before.total_bytes + SMALL / 2);
    } else {
        print_message("online grow not possible here (%s); offline grow checked below\n", why);
        assert_int_equal(after.total_bytes, before.total_bytes);
    }

    /* trim: a deleted file's blocks go back to the host */
    char path[256], img[256];
    snprintf(path, sizeof path, "%s/%s/blob", g_base, name);
    snprintf(img, sizeof img, "%s/.images/%s.img", g_base, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char chunk[1 << 20];
    memset(chunk, 'q', sizeof chunk);
    for (int i = 0; i < 32; i++)
        assert_int_equal(write(fd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    unlink(path);
    sync();
    struct stat st1, st2;
    assert_int_equal(stat(img, &st1), 0);
    uint64_t trimmed = 0;
    CHECK(at_volume_trim(g_base, name, &trimmed, g_err, sizeof g_err));
    assert_int_equal(stat(img, &st2), 0);
    print_message("trim: %llu bytes trimmed, image on disk %lld -> %lld KiB\n",
                  (unsigned long long)trimmed, (long long)st1.st_blocks / 2,
                  (long long)st2.st_blocks / 2);
    assert_true(st2.st_blocks < st1.st_blocks);

    /* offline grow, seen at the next mount */
    CHECK(at_volume_umount(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_volume_grow(g_base, name, 3 * SMALL, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
    CHECK(at_volume_usage(g_base, name, &before, g_err, sizeof g_err));
    print_message("offline grow: %.1f -> %.1f MiB\n", after.total_bytes / 1048576.0,
                  before.total_bytes / 1048576.0);
    assert_true(before.total_bytes > after.total_bytes + SMALL / 2);
    CHECK(at_volume_destroy(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
}

/* A busy volume (an open file) is detached lazily after the timeout. */
static void test_busy_umount(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    const char *name = "busy";
    CHECK(at_volume_create(g_base, name, SMALL, g_err, sizeof g_err));
    CHECK(at_volume_mount(g_base, name, OWNER, OWNER, g_err, sizeof g_err));
    char dir[256], loop[64];
    snprintf(dir, sizeof dir, "%s/%s", g_base, name);
    loop_of(dir, loop, sizeof loop);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    int64_t t0 = at_mono_us();
    CHECK(at_volume_umount(g_base, name, 100, g_err, sizeof g_err));
    print_message("busy umount detached after %.1f ms\n", ms_since(t0));
    assert_false(at_volume_is_mounted(g_base, name));
    close(fd); /* last user gone: the filesystem and its loop device go */
    char img[256];
    snprintf(img, sizeof img, "%s/.images/%s.img", g_base, name);
    int gone = 0;
    for (int i = 0; i < 200 && !gone; i++) {
        gone = !losetup_mentions(img);
        if (!gone)
            usleep(10000);
    }
    assert_true(gone);
    CHECK(at_volume_destroy(g_base, name, TIMEOUT_MS, g_err, sizeof g_err));
}

/* Spares: formatted ahead, taken by a rename on create (of the same size
 * only), and the volume made from one is an ordinary, empty, writable one. */
static int spare_count(void)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s/+spare", g_base, AT_VOLUME_IMAGES);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strstr(de->d_name, ".img") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void test_spares(void **state)
{
    (void)state;
    REQUIRE_FEATURES();
    int64_t t0 = at_mono_us();
    CHECK(at_volume_fill_spares(g_base, SMALL, 2, g_err, sizeof g_err));
    double fill_ms = ms_since(t0);
    assert_int_equal(spare_count(), 2);
    CHECK(at_volume_fill_spares(g_base, SMALL, 2, g_err, sizeof g_err)); /* already there */
    assert_int_equal(spare_count(), 2);
    CHECK(at_volume_create(g_base, "sp/other-size", SMALL * 2, g_err, sizeof g_err));
    assert_int_equal(spare_count(), 2); /* not the size of the spares: formatted */
    t0 = at_mono_us();
    CHECK(at_volume_create(g_base, "sp/taken", SMALL, g_err, sizeof g_err));
    double take_ms = ms_since(t0);
    assert_int_equal(spare_count(), 1);
    CHECK(at_volume_mount(g_base, "sp/taken", OWNER, OWNER, g_err, sizeof g_err));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sp/taken/hello", g_base);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs("hi", f) >= 0);
    assert_int_equal(fclose(f), 0);
    at_volume_usage_t u;
    CHECK(at_volume_usage(g_base, "sp/taken", &u, g_err, sizeof g_err));
    assert_true(u.total_bytes > SMALL / 2 && u.total_bytes <= SMALL);
    print_message("timing spares fill_2_ms=%.1f create_from_spare_ms=%.2f\n", fill_ms, take_ms);
    CHECK(at_volume_destroy(g_base, "sp/taken", TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_volume_destroy(g_base, "sp/other-size", TIMEOUT_MS, g_err, sizeof g_err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_quota_lifecycle),
        cmocka_unit_test(test_default_size_timing),
        cmocka_unit_test(test_two_level_and_list),
        cmocka_unit_test(test_symlinks_not_followed),
        cmocka_unit_test(test_grow_and_trim),
        cmocka_unit_test(test_busy_umount),
        cmocka_unit_test(test_spares), /* last: the spare it leaves would serve the others */
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
