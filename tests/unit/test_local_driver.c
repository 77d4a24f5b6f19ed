/* The local runtime driver (session-manager/local_driver.h) against the real kernel:
 * loop-mounted volumes, cgroups, bwrap and atelier-init. Needs root; exits 77 (skipped)
 * otherwise. Prints p50 timings of create, start, exec `true`, stop and destroy. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox_fixture.h"

#include "atelier/util.h"
#include "cgroup.h"
#include "local_driver.h"
#include "volume.h"

#define HOST_ID 65534
#define RUNS 10

static char g_base[64], g_ws[128], g_runb[128], g_init[192];
static char g_sess[32];
static const char *g_volname = "vol1";
static char g_derr[SM_ERR_MAX];

#define DCHECK(call)                                                                               \
    do {                                                                                           \
        g_derr[0] = '\0';                                                                          \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            print_message("%s -> %d: %s\n", #call, rc_, g_derr);                                   \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

static sm_driver_t *new_driver(void)
{
    sm_local_config_t cfg = {.workspace_base = g_ws,
                             .run_base = g_runb,
                             .init_path = g_init,
                             .host_uid = HOST_ID,
                             .host_gid = HOST_ID};
    sm_driver_t *d = sm_local_driver_new(&cfg, g_derr);
    if (!d)
        print_message("driver: %s\n", g_derr);
    assert_non_null(d);
    return d;
}

static sm_spec_t spec_for(const char *session, const char *volume)
{
    sm_spec_t s = {
        .session = session,
        .workspace_id = session,
        .user_id = 1,
        .volume = volume,
        .limits = {.cpu_millis = 1000, .memory_mb = 512, .pids_max = 0, .disk_bytes = 256LL << 20}};
    return s;
}

static int run_exec(sm_driver_t *d, const char *session, const char *cmd, const char *in,
                    int timeout_ms, size_t max, sm_exec_result_t *r)
{
    sm_exec_t req = {.command = cmd,
                     .stdin_data = in,
                     .stdin_len = in ? strlen(in) : 0,
                     .timeout_ms = timeout_ms,
                     .output_max = max};
    return d->exec(d->self, session, &req, r, g_derr);
}

static int group_setup(void **state)
{
    (void)state;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(g_base, sizeof g_base, "/tmp/hsbx-ld-XXXXXX");
    if (!mkdtemp(g_base))
        return -1;
    chmod(g_base, 0755);
    snprintf(g_ws, sizeof g_ws, "%s/ws", g_base);
    snprintf(g_runb, sizeof g_runb, "%s/run/sandboxes", g_base);
    snprintf(g_init, sizeof g_init, "%s/atelier-init", g_base);
    snprintf(g_sess, sizeof g_sess, "hsbx-ld-%d", (int)getpid());
    if (mkdir(g_ws, 0755) != 0)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "install -m 0755 '%s' '%s'", ATELIER_INIT_BIN, g_init);
    return system(cmd) == 0 ? 0 : -1;
}

/* Everything named after this test's prefix goes, even after a failure. */
static int group_teardown(void **state)
{
    (void)state;
    char e[512], **names = NULL;
    size_t n = 0;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "hsbx-ld-%d", (int)getpid());
    if (at_cgroup_list(&names, &n, e, sizeof e) == AT_OK) {
        for (size_t i = 0; i < n; i++)
            if (strncmp(names[i], prefix, strlen(prefix)) == 0) {
                at_cgroup_kill_all(names[i], 5000, e, sizeof e);
                at_cgroup_destroy(names[i], 5000, e, sizeof e);
            }
        at_cgroup_list_free(names, n);
    }
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if (at_volume_list_mounted(g_ws, &names, &n, e, sizeof e) == AT_OK) {
        for (size_t i = 0; i < n; i++)
            at_volume_destroy(g_ws, names[i], 5000, e, sizeof e);
        at_volume_list_free(names, n);
    }
    for (int i = 0; i < RUNS; i++) {
        char v[32];
        snprintf(v, sizeof v, "bench%d", i);
        at_volume_destroy(g_ws, v, 5000, e, sizeof e);
    }
    at_volume_destroy(g_ws, g_volname, 5000, e, sizeof e);
    rm_tree(g_base);
    return 0;
}

static int cgroup_has(const char *session)
{
    return at_cgroup_exists(session);
}

static void test_lifecycle(void **state)
{
    (void)state;
    sm_driver_t *d = new_driver();
    sm_spec_t spec = spec_for(g_sess, g_volname);
    sm_state_t st;
    DCHECK(d->create(d->self, &spec, &st, g_derr));
    DCHECK(d->create(d->self, &spec, &st, g_derr)); /* idempotent */
    assert_false(st.running);
    at_cgroup_limits_t lim;
    CHECK(at_cgroup_get_limits(g_sess, &lim, g_err, sizeof g_err));
    assert_int_equal(lim.pids_max, SM_LOCAL_PIDS_DEFAULT);
    assert_int_equal((int)lim.memory_mb, 512);

    DCHECK(d->start(d->self, &spec, &st, g_derr));
    assert_true(st.running);
    assert_true(st.pid > 0);
    pid_t pid1 = st.pid;
    DCHECK(d->start(d->self, &spec, &st, g_derr)); /* running: same sandbox */
    assert_int_equal(st.pid, pid1);

    sm_exec_result_t r;
    DCHECK(run_exec(d, g_sess, "echo hi; echo err >&2; exit 3", NULL, 5000, 0, &r));
    assert_string_equal(r.out, "hi\n");
    assert_string_equal(r.err, "err\n");
    assert_int_equal(r.exit_code, 3);
    assert_false(r.timed_out);
    sm_local_exec_result_free(&r);

    if (system("/usr/bin/python3 -c 'import numpy, pandas, scipy' 2>/dev/null") == 0) {
        DCHECK(run_exec(d, g_sess, "python3 -c \"import numpy, pandas, scipy; print(1)\"", NULL,
                        60000, 0, &r));
        if (r.exit_code != 0)
            print_message("python: %s\n", r.err);
        assert_string_equal(r.out, "1\n");
        assert_int_equal(r.exit_code, 0);
        sm_local_exec_result_free(&r);
    } else {
        print_message("python check skipped: numpy/pandas/scipy not installed on the host\n");
    }

    DCHECK(run_exec(d, g_sess, "tr a-z A-Z", "hello stdin", 5000, 0, &r));
    assert_string_equal(r.out, "HELLO STDIN");
    assert_int_equal(r.exit_code, 0);
    sm_local_exec_result_free(&r);

    DCHECK(run_exec(d, g_sess, "sleep 10", NULL, 300, 0, &r));
    assert_true(r.timed_out);
    assert_int_equal(r.exit_code, -1);
    assert_true(r.duration_ms < 3000);
    sm_local_exec_result_free(&r);

    DCHECK(run_exec(d, g_sess, "head -c 100000 /dev/zero | tr '\\0' x; echo done >&2", NULL, 5000,
                    1000, &r));
    assert_int_equal((int)r.out_len, 1000);
    assert_true(r.out_truncated);
    assert_false(r.err_truncated);
    assert_string_equal(r.err, "done\n");
    assert_int_equal(r.exit_code, 0);
    sm_local_exec_result_free(&r);

    DCHECK(run_exec(d, g_sess, "echo data > /workspace/f.txt", NULL, 5000, 0, &r));
    assert_int_equal(r.exit_code, 0);
    sm_local_exec_result_free(&r);
    char host_file[256];
    snprintf(host_file, sizeof host_file, "%s/%s/f.txt", g_ws, g_volname);
    struct stat fst;
    assert_int_equal(stat(host_file, &fst), 0);
    assert_int_equal((int)fst.st_uid, HOST_ID);

    sm_limits_t up = {.cpu_millis = 2000, .memory_mb = 1024, .pids_max = 600};
    DCHECK(d->scale(d->self, g_sess, &up, g_derr));
    CHECK(at_cgroup_get_limits(g_sess, &lim, g_err, sizeof g_err));
    assert_int_equal((int)lim.cpu_millis, 2000);
    assert_int_equal((int)lim.memory_mb, 1024);
    assert_int_equal((int)lim.pids_max, 600);

    /* sleep / wake: the file survives */
    DCHECK(d->stop(d->self, g_sess, 1, g_derr));
    DCHECK(d->stop(d->self, g_sess, 1, g_derr)); /* idempotent */
    DCHECK(d->state(d->self, g_sess, &st, g_derr));
    assert_false(st.running);
    assert_false(at_volume_is_mounted(g_ws, g_volname));
    DCHECK(d->start(d->self, &spec, &st, g_derr));
    assert_true(st.running);
    DCHECK(run_exec(d, g_sess, "cat /workspace/f.txt", NULL, 5000, 0, &r));
    assert_string_equal(r.out, "data\n");
    sm_local_exec_result_free(&r);
    pid1 = st.pid;

    /* a manager restart: a fresh driver finds the running sandbox */
    sm_local_driver_free(d);
    d = new_driver();
    DCHECK(d->state(d->self, g_sess, &st, g_derr));
    assert_true(st.running);
    assert_int_equal(st.pid, pid1);
    assert_true(st.memory_bytes > 0);
    DCHECK(d->start(d->self, &spec, &st, g_derr));
    assert_int_equal(st.pid, pid1);
    DCHECK(run_exec(d, g_sess, "cat /workspace/f.txt", NULL, 5000, 0, &r));
    assert_string_equal(r.out, "data\n");
    sm_local_exec_result_free(&r);

    DCHECK(d->destroy(d->self, g_sess, g_volname, SM_VOLUME_REMOVE, g_derr));
    DCHECK(d->destroy(d->self, g_sess, g_volname, SM_VOLUME_REMOVE, g_derr)); /* idempotent */
    assert_false(cgroup_has(g_sess));
    assert_false(at_volume_is_mounted(g_ws, g_volname));
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_runb, g_sess);
    assert_int_not_equal(access(path, F_OK), 0);
    /* The first driver instance launched that sandbox and was freed without reaping
     * (a real restart has a new process that is nobody's parent); with this test as
     * subreaper the killed init and bwrap come back here as zombies: reap them. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    assert_int_not_equal(kill(pid1, 0), 0); /* no process */
    sm_local_driver_free(d);
}

static void count_cb(const char *session, void *arg)
{
    const char **want = arg;
    if (strcmp(session, want[0]) == 0)
        want[1] = "found";
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double p50(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

static void test_list_and_timings(void **state)
{
    (void)state;
    sm_driver_t *d = new_driver();
    double t_create[RUNS], t_start[RUNS], t_exec[RUNS], t_stop[RUNS], t_destroy[RUNS];
    for (int i = 0; i < RUNS; i++) {
        char sess[64], vol[32];
        snprintf(sess, sizeof sess, "%s-b%d", g_sess, i);
        snprintf(vol, sizeof vol, "bench%d", i);
        sm_spec_t spec = spec_for(sess, vol);
        sm_state_t st;
        int64_t t0 = at_mono_us();
        DCHECK(d->create(d->self, &spec, NULL, g_derr));
        t_create[i] = ms_since(t0);
        t0 = at_mono_us();
        DCHECK(d->start(d->self, &spec, &st, g_derr));
        t_start[i] = ms_since(t0);
        assert_true(st.running);
        if (i == 0) {
            const char *want[2] = {sess, NULL};
            DCHECK(d->list(d->self, count_cb, want, g_derr));
            assert_non_null(want[1]);
        }
        sm_exec_result_t r;
        t0 = at_mono_us();
        DCHECK(run_exec(d, sess, "true", NULL, 5000, 0, &r));
        t_exec[i] = ms_since(t0);
        assert_int_equal(r.exit_code, 0);
        sm_local_exec_result_free(&r);
        t0 = at_mono_us();
        DCHECK(d->stop(d->self, sess, 1, g_derr));
        t_stop[i] = ms_since(t0);
        t0 = at_mono_us();
        DCHECK(d->destroy(d->self, sess, vol, SM_VOLUME_REMOVE, g_derr));
        t_destroy[i] = ms_since(t0);
        assert_false(cgroup_has(sess));
    }
    print_message("timing local driver p50 over %d: create_ms=%.1f start_ms=%.1f "
                  "exec_true_ms=%.1f stop_ms=%.1f destroy_ms=%.1f\n",
                  RUNS, p50(t_create, RUNS), p50(t_start, RUNS), p50(t_exec, RUNS),
                  p50(t_stop, RUNS), p50(t_destroy, RUNS));
    sm_local_driver_free(d);
}

int main(void)
{
    if (geteuid() != 0) {
        printf("skipped: needs root (cgroups, loop mounts, uid switch)\n");
        return 77;
    }
    if (access(AT_BWRAP_PATH, X_OK) != 0 || at_cgroup_mode() == AT_CGROUP_NONE ||
        access("/dev/loop-control", W_OK) != 0) {
        printf("skipped: needs %s, a cgroup hierarchy and /dev/loop-control\n", AT_BWRAP_PATH);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_list_and_timings),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
