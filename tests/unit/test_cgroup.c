/*
 * Per-session cgroups on the real kernel: create with limits, attach a
 * process, read usage, change limits live, freeze, kill everything, destroy;
 * a memory hog is OOM-killed inside its group while the test lives on; a fork
 * loop stops at the pids limit; a CPU spinner is held to its quota; lowering
 * memory below usage is refused without killing anything. On a hybrid host the
 * v2 code path also runs against the controller-less /sys/fs/cgroup/unified.
 * Groups are named hsbx-<pid>-*; the group teardown removes every one of them
 * (and those of earlier runs that died) even after a failed assertion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/magic.h>

#include "atelier/util.h"
#include "cgroup.h"
#include "sandbox_fixture.h"

#define PREFIX "hsbx-"
#define TIMEOUT_MS 5000

static void name_for(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, PREFIX "%d-%s", (int)getpid(), tag);
}

/* Remove our groups, and those of dead earlier runs (hsbx-<pid>- with no such pid). */
static void cleanup_groups(int only_mine)
{
    char **names = NULL;
    size_t n = 0;
    if (at_cgroup_list(&names, &n, g_err, sizeof g_err) != AT_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        int pid = 0;
        if (sscanf(names[i], PREFIX "%d-", &pid) != 1)
            continue;
        int mine = pid == (int)getpid();
        int stale = !mine && kill(pid, 0) != 0 && errno == ESRCH;
        if (mine || (!only_mine && stale)) {
            at_cgroup_kill_all(names[i], TIMEOUT_MS, g_err, sizeof g_err);
            while (waitpid(-1, NULL, WNOHANG) > 0) {
            }
            at_cgroup_destroy(names[i], TIMEOUT_MS, g_err, sizeof g_err);
        }
    }
    at_cgroup_list_free(names, n);
}

/* Leave the host as found: drop the atelier/ parents if nothing else uses them
 * (rmdir fails harmlessly on a non-empty one). */
static void remove_empty_parents(void)
{
    static const char *const roots[] = {"/sys/fs/cgroup/cpu",         "/sys/fs/cgroup/cpuacct",
                                        "/sys/fs/cgroup/memory",      "/sys/fs/cgroup/pids",
                                        "/sys/fs/cgroup/freezer",     "/sys/fs/cgroup/unified",
                                        "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup"};
    char path[256];
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", roots[i], AT_CGROUP_PARENT);
        rmdir(path);
    }
}

static int group_setup(void **state)
{
    (void)state;
    if (geteuid() != 0 || at_cgroup_mode() == AT_CGROUP_NONE)
        return 0;
    /* orphaned grandchildren of our test processes come back to us to be reaped */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    cleanup_groups(0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    /* a failed v2 test may have left the mode pinned: clean both views */
    struct statfs sf;
    const char *unified = "/sys/fs/cgroup/unified";
    if (statfs(unified, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC &&
        at_cgroup_force_mode(AT_CGROUP_V2, unified, 0, g_err, sizeof g_err) == AT_OK)
        cleanup_groups(1);
    at_cgroup_force_mode(AT_CGROUP_NONE, NULL, 1, g_err, sizeof g_err);
    if (at_cgroup_mode() != AT_CGROUP_NONE)
        cleanup_groups(1);
    remove_empty_parents();
    return 0;
}

static int need_cgroups(void)
{
    if (geteuid() != 0) {
        print_message("skipped: needs root to create cgroups\n");
        return 0;
    }
    if (at_cgroup_mode() == AT_CGROUP_NONE) {
        print_message("skipped: no usable cgroup hierarchy (v2, or v1 cpu+memory+pids+freezer)\n");
        return 0;
    }
    return 1;
}

#define REQUIRE_CGROUPS()                                                                          \
    do {                                                                                           \
        if (!need_cgroups())                                                                       \
            skip();                                                                                \
    } while (0)

/* fork a child that joins the group itself and then runs body; the parent
 * gets the pid once the child is in the group. */
static pid_t spawn_in(const char *name, void (*body)(void *), void *arg)
{
    int p[2];
    pid_t pid = fork_with_pipe(p);
    if (pid == 0) {
        char err[256];
        if (at_cgroup_attach(name, 0, err, sizeof err) != AT_OK)
            _exit(90);
        if (write(p[1], "x", 1) != 1)
            _exit(91);
        close(p[1]);
        body(arg);
        _exit(0);
    }
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    return pid;
}

static void body_count(void *arg)
{
    volatile uint64_t *counter = arg;
    for (;;)
        (*counter)++;
}

static int reap(pid_t pid, int timeout_ms)
{
    int status = -1;
    for (int i = 0; i < timeout_ms; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void test_names(void **state)
{
    (void)state;
    assert_false(at_cgroup_name_ok(""));
    assert_false(at_cgroup_name_ok("."));
    assert_false(at_cgroup_name_ok(".."));
    assert_false(at_cgroup_name_ok("a/b"));
    assert_false(at_cgroup_name_ok("a b"));
    assert_false(at_cgroup_name_ok(NULL));
    char long_name[AT_CGROUP_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(at_cgroup_name_ok(long_name));
    assert_true(at_cgroup_name_ok("3f2a6c1e-0d4b-4a8e-9a51-1c2d3e4f5a6b"));
    if (!need_cgroups())
        return;
    assert_int_equal(at_cgroup_create("../escape", NULL, g_err, sizeof g_err), AT_EINVAL);
}

/* The whole life of one group, timed: the figures feed the lifecycle benchmark. */
static void test_lifecycle(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "life");
    at_cgroup_limits_t lim = {.cpu_millis = 500, .memory_mb = 512, .pids_max = 256};
    int64_t t0 = at_mono_us();
    CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
    double create_ms = ms_since(t0);
    assert_true(at_cgroup_exists(name));
    at_cgroup_limits_t got;
    CHECK(at_cgroup_get_limits(name, &got, g_err, sizeof g_err));
    assert_int_equal(got.cpu_millis, 500);
    assert_int_equal(got.memory_mb, 512);
    assert_int_equal(got.pids_max, 256);

    uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(counter != MAP_FAILED);
    pid_t pid = spawn_in(name, body_count, counter);
    pid_t pids[16];
    size_t n = 0;
    CHECK(at_cgroup_pids(name, pids, 16, &n, g_err, sizeof g_err));
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], pid);
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
    at_cgroup_usage_t u;
    CHECK(at_cgroup_usage(name, &u, g_err, sizeof g_err));
    assert_int_equal(u.pids, 1);
    assert_true(u.cpu_usage_ns > 0);
    assert_int_equal(u.oom_kills, 0);

    /* scale up, live */
    at_cgroup_limits_t up = {.cpu_millis = 2000, .memory_mb = 2048, .pids_max = 512};
    t0 = at_mono_us();
    CHECK(at_cgroup_set_limits(name, &up, g_err, sizeof g_err));
    double scale_ms = ms_since(t0);
    CHECK(at_cgroup_get_limits(name, &got, g_err, sizeof g_err));
    assert_int_equal(got.cpu_millis, 2000);
    assert_int_equal(got.memory_mb, 2048);
    assert_int_equal(got.pids_max, 512);
    /* and back down, still live */
    at_cgroup_limits_t down = {.cpu_millis = 1000, .memory_mb = 1024, .pids_max = 256};
    CHECK(at_cgroup_set_limits(name, &down, g_err, sizeof g_err));
    CHECK(at_cgroup_get_limits(name, &got, g_err, sizeof g_err));
    assert_int_equal(got.memory_mb, 1024);
    assert_int_equal(got.cpu_millis, 1000);

    /* freeze: the counter stops; thaw: it runs again */
    t0 = at_mono_us();
    CHECK(at_cgroup_freeze(name, TIMEOUT_MS, g_err, sizeof g_err));
    double freeze_ms = ms_since(t0);
    uint64_t c1 = *(volatile uint64_t *)counter;
    nanosleep(&ts, NULL);
    uint64_t c2 = *(volatile uint64_t *)counter;
    assert_true(c1 == c2);
    CHECK(at_cgroup_thaw(name, TIMEOUT_MS, g_err, sizeof g_err));
    nanosleep(&ts, NULL);
    assert_true(*(volatile uint64_t *)counter > c2);

    t0 = at_mono_us();
    CHECK(at_cgroup_kill_all(name, TIMEOUT_MS, g_err, sizeof g_err));
    double kill_ms = ms_since(t0);
    int status = reap(pid, TIMEOUT_MS);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    CHECK(at_cgroup_pids(name, pids, 16, &n, g_err, sizeof g_err));
    assert_int_equal(n, 0);

    t0 = at_mono_us();
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
    double destroy_ms = ms_since(t0);
    assert_false(at_cgroup_exists(name));
    /* destroy and kill_all of an absent group are no-ops */
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_cgroup_kill_all(name, TIMEOUT_MS, g_err, sizeof g_err));
    munmap(counter, 4096);
    print_message("timing mode=%s create+limits_ms=%.2f scale_ms=%.2f freeze_ms=%.2f "
                  "kill_all_ms=%.2f destroy_ms=%.2f\n",
                  at_cgroup_mode() == AT_CGROUP_V2 ? "v2" : "v1", create_ms, scale_ms, freeze_ms,
                  kill_ms, destroy_ms);
}

/* Over and over, for figures with a spread (create+limits, destroy). */
static void test_timing_repeat(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    enum { N = 50 };
    double c[N], d[N];
    at_cgroup_limits_t lim = {.cpu_millis = 1000, .memory_mb = 1024, .pids_max = 512};
    for (int i = 0; i < N; i++) {
        char name[64], tag[16];
        snprintf(tag, sizeof tag, "rep%d", i);
        name_for(name, sizeof name, tag);
        int64_t t0 = at_mono_us();
        CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
        c[i] = ms_since(t0);
        t0 = at_mono_us();
        CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
        d[i] = ms_since(t0);
    }
    /* simple sort for percentiles */
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            if (c[j] < c[i]) {
                double t = c[i];
                c[i] = c[j];
                c[j] = t;
            }
            if (d[j] < d[i]) {
                double t = d[i];
                d[i] = d[j];
                d[j] = t;
            }
        }
    print_message("timing n=%d create+limits p50=%.2fms p99=%.2fms destroy p50=%.2fms "
                  "p99=%.2fms\n",
                  N, c[N / 2], c[N * 99 / 100], d[N / 2], d[N * 99 / 100]);
}

static void body_hog(void *arg)
{
    size_t mb = *(size_t *)arg;
    size_t len = mb << 20;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(92);
    for (size_t off = 0; off < len; off += 4096)
        p[off] = 1;
    _exit(93); /* should not get here: the group's limit is far below */
}

static void test_oom_kill(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "oom");
    at_cgroup_limits_t lim = {.memory_mb = 64};
    CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
    size_t mb = 512;
    pid_t pid = spawn_in(name, body_hog, &mb);
    int status = reap(pid, 20000);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    at_cgroup_usage_t u;
    CHECK(at_cgroup_usage(name, &u, g_err, sizeof g_err));
    assert_int_equal(u.oom_kills, 1);
    /* we are still here, outside the group */
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
}

static void body_hold(void *arg)
{
    int fd = *(int *)arg;
    size_t len = 96u << 20;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(92);
    for (size_t off = 0; off < len; off += 4096)
        p[off] = 1;
    if (write(fd, "y", 1) != 1)
        _exit(94);
    for (;;)
        pause();
}

static void test_memory_below_usage_refused(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "lower");
    at_cgroup_limits_t lim = {.cpu_millis = 1000, .memory_mb = 256, .pids_max = 64};
    CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = spawn_in(name, body_hold, &p[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1); /* 96 MiB are resident */
    close(p[0]);
    close(p[1]);

    at_cgroup_limits_t low = {.cpu_millis = 1000, .memory_mb = 32, .pids_max = 64};
    int64_t t0 = at_mono_us();
    at_err_t rc = at_cgroup_set_limits(name, &low, g_err, sizeof g_err);
    double ms = ms_since(t0);
    print_message("lower below usage: rc=%d after %.1f ms: %s\n", (int)rc, ms, g_err);
    assert_int_equal(rc, AT_EBUSY);
    assert_true(ms < 5000);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0); /* not killed */
    at_cgroup_limits_t got;
    CHECK(at_cgroup_get_limits(name, &got, g_err, sizeof g_err));
    assert_int_equal(got.memory_mb, 256);
    at_cgroup_usage_t u;
    CHECK(at_cgroup_usage(name, &u, g_err, sizeof g_err));
    assert_int_equal(u.oom_kills, 0);
    assert_true(u.memory_bytes >= (90u << 20));

    /* a limit above usage still works */
    at_cgroup_limits_t ok = {.cpu_millis = 1000, .memory_mb = 128, .pids_max = 64};
    CHECK(at_cgroup_set_limits(name, &ok, g_err, sizeof g_err));
    CHECK(at_cgroup_kill_all(name, TIMEOUT_MS, g_err, sizeof g_err));
    reap(pid, TIMEOUT_MS);
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
}

static void body_fork_loop(void *arg)
{
    int fd = *(int *)arg;
    int made = 0, err = 0;
    for (int i = 0; i < 200; i++) {
        pid_t c = fork();
        if (c < 0) {
            err = errno;
            break;
        }
        if (c == 0) {
            for (;;)
                pause();
        }
        made++;
    }
    dprintf(fd, "%d %d\n", made, err);
    for (;;)
        pause();
}

static void test_pids_limit(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "pids");
    at_cgroup_limits_t lim = {.pids_max = 16};
    CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = spawn_in(name, body_fork_loop, &p[1]);
    char line[64] = "";
    ssize_t n = read(p[0], line, sizeof line - 1);
    close(p[0]);
    close(p[1]);
    assert_true(n > 0);
    line[n] = '\0';
    int made = -1, err = -1;
    assert_int_equal(sscanf(line, "%d %d", &made, &err), 2);
    print_message("fork loop: %d forks, then errno %d (%s)\n", made, err, strerror(err));
    assert_true(made < 16);
    assert_int_equal(err, EAGAIN);
    at_cgroup_usage_t u;
    CHECK(at_cgroup_usage(name, &u, g_err, sizeof g_err));
    assert_true(u.pids <= 16);
    int64_t t0 = at_mono_us();
    CHECK(at_cgroup_kill_all(name, TIMEOUT_MS, g_err, sizeof g_err));
    print_message("kill_all of %d processes: %.2f ms\n", made + 1, ms_since(t0));
    reap(pid, TIMEOUT_MS);
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
}

static void body_spin(void *arg)
{
    (void)arg;
    int64_t end = at_mono_us() + 1000000;
    while (at_mono_us() < end) {
    }
}

static void test_cpu_quota(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "cpu");
    at_cgroup_limits_t lim = {.cpu_millis = 200};
    CHECK(at_cgroup_create(name, &lim, g_err, sizeof g_err));
    pid_t pid = spawn_in(name, body_spin, NULL);
    int status = reap(pid, 10000);
    assert_true(WIFEXITED(status));
    at_cgroup_usage_t u;
    CHECK(at_cgroup_usage(name, &u, g_err, sizeof g_err));
    print_message("1 s of spinning at 0.2 CPU used %.0f ms of CPU\n", u.cpu_usage_ns / 1e6);
    assert_true(u.cpu_usage_ns < 400000000ULL); /* 200 ms allowed, scheduler slack */
    assert_true(u.cpu_usage_ns > 50000000ULL);
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
}

static void body_exit(void *arg)
{
    (void)arg;
    _exit(0);
}

/* The bwrap monitor is the manager's child: until the manager reaps it, it is
 * a zombie in the group. That must not make kill_all or destroy hang. */
static void test_unreaped_zombie(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char name[64];
    name_for(name, sizeof name, "zombie");
    CHECK(at_cgroup_create(name, NULL, g_err, sizeof g_err));
    pid_t pid = spawn_in(name, body_exit, NULL);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0); /* exited, unreaped */
    CHECK(at_cgroup_kill_all(name, 1000, g_err, sizeof g_err));
    CHECK(at_cgroup_destroy(name, 1000, g_err, sizeof g_err));
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_list(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    char a[64], b[64];
    name_for(a, sizeof a, "list-a");
    name_for(b, sizeof b, "list-b");
    CHECK(at_cgroup_create(a, NULL, g_err, sizeof g_err));
    CHECK(at_cgroup_create(b, NULL, g_err, sizeof g_err));
    char **names = NULL;
    size_t n = 0;
    CHECK(at_cgroup_list(&names, &n, g_err, sizeof g_err));
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        seen += strcmp(names[i], a) == 0 || strcmp(names[i], b) == 0;
    at_cgroup_list_free(names, n);
    assert_int_equal(seen, 2);
    CHECK(at_cgroup_destroy(a, TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_cgroup_destroy(b, TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_cgroup_list(&names, &n, g_err, sizeof g_err));
    for (size_t i = 0; i < n; i++)
        assert_true(strcmp(names[i], a) != 0 && strcmp(names[i], b) != 0);
    at_cgroup_list_free(names, n);
}

/* v2 code path on a hybrid host: the unified hierarchy has no controllers
 * here, but attach, freeze (cgroup.freeze), kill (cgroup.kill) and rmdir are
 * the v2 files a v2-only host uses. */
static void test_v2_path_on_unified(void **state)
{
    (void)state;
    REQUIRE_CGROUPS();
    const char *root = "/sys/fs/cgroup/unified";
    struct statfs sf;
    if (at_cgroup_mode() != AT_CGROUP_V1 || statfs(root, &sf) != 0 ||
        sf.f_type != CGROUP2_SUPER_MAGIC) {
        print_message("skipped: needs a hybrid host with cgroup2 at %s\n", root);
        skip();
    }
    CHECK(at_cgroup_force_mode(AT_CGROUP_V2, root, 0, g_err, sizeof g_err));
    char name[64];
    name_for(name, sizeof name, "v2");
    CHECK(at_cgroup_create(name, NULL, g_err, sizeof g_err));
    uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(counter != MAP_FAILED);
    pid_t pid = spawn_in(name, body_count, counter);
    pid_t pids[4];
    size_t n = 0;
    CHECK(at_cgroup_pids(name, pids, 4, &n, g_err, sizeof g_err));
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], pid);
    CHECK(at_cgroup_freeze(name, TIMEOUT_MS, g_err, sizeof g_err));
    uint64_t c1 = *(volatile uint64_t *)counter;
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
    assert_true(*(volatile uint64_t *)counter == c1);
    CHECK(at_cgroup_thaw(name, TIMEOUT_MS, g_err, sizeof g_err));
    CHECK(at_cgroup_kill_all(name, TIMEOUT_MS, g_err, sizeof g_err));
    int status = reap(pid, TIMEOUT_MS);
    assert_true(WIFSIGNALED(status));
    CHECK(at_cgroup_destroy(name, TIMEOUT_MS, g_err, sizeof g_err));
    assert_false(at_cgroup_exists(name));
    munmap(counter, 4096);
    char parent[256];
    snprintf(parent, sizeof parent, "%s/%s", root, AT_CGROUP_PARENT);
    rmdir(parent); /* test-only parent on this host; fails harmlessly if in use */
    CHECK(at_cgroup_force_mode(AT_CGROUP_NONE, NULL, 1, g_err, sizeof g_err));
    assert_int_equal(at_cgroup_mode(), AT_CGROUP_V1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_timing_repeat),
        cmocka_unit_test(test_oom_kill),
        cmocka_unit_test(test_memory_below_usage_refused),
        cmocka_unit_test(test_pids_limit),
        cmocka_unit_test(test_cpu_quota),
        cmocka_unit_test(test_unreaped_zombie),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_v2_path_on_unified),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
