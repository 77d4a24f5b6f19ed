/* initctl against a real atelier-init in a real bubblewrap sandbox (cmocka, under
 * ctest). Needs root and /usr/bin/bwrap; exits 77 (skipped) without them. Prints the
 * spawn round trip the session-manager will see. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "initctl.h"

#define BWRAP "/usr/bin/bwrap"
#define TIMEOUT_MS 5000

static const char *const ENV[] = {"PATH=/usr/bin:/bin", "HOME=/workspace", NULL};

struct sandbox {
    char dir[64], run[80], ws[80], sock[96];
    pid_t bwrap;
    at_initctl_t *c;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void start_sandbox(struct sandbox *sb)
{
    snprintf(sb->dir, sizeof sb->dir, "/tmp/atelier-initctl-test-XXXXXX");
    assert_non_null(mkdtemp(sb->dir));
    snprintf(sb->run, sizeof sb->run, "%s/run", sb->dir);
    snprintf(sb->ws, sizeof sb->ws, "%s/ws", sb->dir);
    snprintf(sb->sock, sizeof sb->sock, "%s/init.sock", sb->run);
    assert_int_equal(mkdir(sb->run, 0755), 0);
    assert_int_equal(mkdir(sb->ws, 0755), 0);
    const char *argv[] = {BWRAP,
                          "--unshare-pid",
                          "--as-pid-1",
                          "--unshare-user",
                          "--uid",
                          "1000",
                          "--gid",
                          "1000",
                          "--unshare-ipc",
                          "--unshare-uts",
                          "--unshare-net",
                          "--ro-bind",
                          "/usr",
                          "/usr",
                          "--symlink",
                          "usr/lib",
                          "/lib",
                          "--symlink",
                          "usr/lib64",
                          "/lib64",
                          "--symlink",
                          "usr/bin",
                          "/bin",
                          "--proc",
                          "/proc",
                          "--dev",
                          "/dev",
                          "--tmpfs",
                          "/tmp",
                          "--bind",
                          sb->run,
                          "/run/atelier",
                          "--bind",
                          sb->ws,
                          "/workspace",
                          "--ro-bind",
                          ATELIER_INIT_BIN,
                          "/.atelier/init",
                          "--chdir",
                          "/workspace",
                          "--new-session",
                          "/.atelier/init",
                          "--socket",
                          "/run/atelier/init.sock",
                          "--workdir",
                          "/workspace",
                          NULL};
    sb->bwrap = fork();
    assert_true(sb->bwrap >= 0);
    if (sb->bwrap == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        execv(BWRAP, (char **)argv);
        _exit(127);
    }
    char err[256] = "";
    /* init is not listening yet: connect retries until it is */
    at_err_t rc = at_initctl_connect(sb->sock, TIMEOUT_MS, &sb->c, err, sizeof err);
    if (rc != AT_OK)
        fail_msg("connect: %s", err);
}

static void stop_sandbox(struct sandbox *sb)
{
    if (sb->c) {
        pid_t init = at_initctl_peer_pid(sb->c);
        if (init > 0)
            kill(init, SIGKILL);
        at_initctl_close(sb->c);
        sb->c = NULL;
    }
    if (sb->bwrap > 0) {
        kill(sb->bwrap, SIGKILL);
        waitpid(sb->bwrap, NULL, 0);
    }
    unlink(sb->sock);
    rmdir(sb->run);
    rmdir(sb->ws);
    rmdir(sb->dir);
}

static int setup(void **state)
{
    struct sandbox *sb = calloc(1, sizeof *sb);
    start_sandbox(sb);
    *state = sb;
    return 0;
}

static int teardown(void **state)
{
    stop_sandbox(*state);
    free(*state);
    return 0;
}

/* Reads fd until needle shows up (or fails the test after TIMEOUT_MS). */
static void read_until(int fd, const char *needle)
{
    char buf[8192];
    size_t len = 0;
    int64_t deadline = now_us() + TIMEOUT_MS * 1000LL;
    while (len < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(poll(&p, 1, (int)((deadline - now_us()) / 1000)) > 0);
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        assert_true(n > 0);
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, needle))
            return;
    }
    fail_msg("no '%s' in '%s'", needle, buf);
}

/* Waits for the exit event of pid, leaving other events aside. */
static at_initctl_exit_t wait_exit(at_initctl_t *c, pid_t pid)
{
    char err[256];
    for (;;) {
        json_t *ev;
        at_err_t rc = at_initctl_read_event(c, &ev, TIMEOUT_MS, err, sizeof err);
        if (rc != AT_OK)
            fail_msg("read_event: %s", err);
        at_initctl_exit_t ex;
        rc = at_initctl_exit_from_json(ev, &ex);
        json_decref(ev);
        if (rc == AT_OK && ex.pid == pid)
            return ex;
    }
}

static void test_ping(void **state)
{
    struct sandbox *sb = *state;
    at_initctl_ping_t ping;
    char err[256];
    assert_int_equal(at_initctl_ping(sb->c, &ping, TIMEOUT_MS, err, sizeof err), AT_OK);
    assert_int_equal(ping.pid, 1);
    assert_int_equal(ping.children, 0);
    assert_true(at_initctl_peer_pid(sb->c) > 1); /* the host's view of the sandbox's PID 1 */
    json_t *ev;
    assert_int_equal(at_initctl_read_event(sb->c, &ev, 0, err, sizeof err), AT_ETIMEOUT);
}

static void test_pty_and_pipes(void **state)
{
    struct sandbox *sb = *state;
    char err[256];
    const char *bash[] = {"bash", "--norc", "--noprofile", "-i", NULL};
    at_initctl_spawn_t spec = {.argv = bash, .env = ENV, .pty = true, .cols = 120, .rows = 40};
    at_initctl_proc_fds_t shell;
    assert_int_equal(at_initctl_spawn(sb->c, &spec, &shell, TIMEOUT_MS, err, sizeof err), AT_OK);
    assert_true(shell.pty && shell.fds[0] >= 0 && shell.fds[1] < 0 && shell.fds[2] < 0);
    static const char cmd[] = "echo x$((6*7)); stty size\n";
    assert_int_equal(write(shell.fds[0], cmd, sizeof cmd - 1), (ssize_t)(sizeof cmd - 1));
    read_until(shell.fds[0], "x42");
    read_until(shell.fds[0], "40 120");

    const char *sh[] = {"sh", "-c", "cat; echo done >&2; exit 5", NULL};
    at_initctl_spawn_t pspec = {.argv = sh, .env = ENV};
    at_initctl_proc_fds_t p;
    assert_int_equal(at_initctl_spawn(sb->c, &pspec, &p, TIMEOUT_MS, err, sizeof err), AT_OK);
    assert_false(p.pty);
    assert_int_equal(write(p.fds[0], "abc", 3), 3);
    close(p.fds[0]);
    assert_int_equal(at_initctl_close_stdin(sb->c, p.pid, TIMEOUT_MS, err, sizeof err), AT_OK);
    read_until(p.fds[1], "abc");
    read_until(p.fds[2], "done");
    at_initctl_exit_t ex = wait_exit(sb->c, p.pid);
    assert_int_equal(ex.code, 5);
    assert_int_equal(ex.signal, 0);
    close(p.fds[1]);
    close(p.fds[2]);

    /* a second connection re-attaches to the shell */
    at_initctl_t *c2;
    assert_int_equal(at_initctl_connect(sb->sock, TIMEOUT_MS, &c2, err, sizeof err), AT_OK);
    at_initctl_procinfo_t *procs;
    size_t n;
    assert_int_equal(at_initctl_list(c2, &procs, &n, TIMEOUT_MS, err, sizeof err), AT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(procs[0].pid, shell.pid);
    assert_string_equal(procs[0].argv0, "bash");
    free(procs);
    at_initctl_proc_fds_t again;
    assert_int_equal(at_initctl_attach(c2, shell.pid, &again, TIMEOUT_MS, err, sizeof err), AT_OK);
    assert_int_equal(write(again.fds[0], "echo y$((5*5))\n", 15), 15);
    read_until(again.fds[0], "y25");
    close(again.fds[0]);
    assert_int_equal(at_initctl_signal(c2, shell.pid, SIGKILL, true, TIMEOUT_MS, err, sizeof err),
                     AT_OK);
    assert_int_equal(wait_exit(c2, shell.pid).signal, SIGKILL);
    at_initctl_close(c2);
    close(shell.fds[0]);

    /* records stay until acknowledged */
    at_initctl_exit_t *ex_list;
    bool more;
    uint64_t dropped;
    assert_int_equal(
        at_initctl_exits(sb->c, 0, &ex_list, &n, &more, &dropped, TIMEOUT_MS, err, sizeof err),
        AT_OK);
    assert_int_equal(n, 2);
    assert_false(more);
    uint64_t last = ex_list[1].seq;
    free(ex_list);
    assert_int_equal(
        at_initctl_exits(sb->c, last, &ex_list, &n, &more, &dropped, TIMEOUT_MS, err, sizeof err),
        AT_OK);
    assert_int_equal(n, 0);
    free(ex_list);
}

static void test_errors(void **state)
{
    struct sandbox *sb = *state;
    char err[256];
    const char *nosuch[] = {"no-such-program", NULL};
    at_initctl_spawn_t spec = {.argv = nosuch, .env = ENV};
    at_initctl_proc_fds_t p;
    assert_int_equal(at_initctl_spawn(sb->c, &spec, &p, TIMEOUT_MS, err, sizeof err), AT_ENOTFOUND);
    assert_string_equal(err, "exec no-such-program: No such file or directory");
    assert_int_equal(at_initctl_attach(sb->c, 4242, &p, TIMEOUT_MS, err, sizeof err), AT_ENOTFOUND);
    json_t *req = json_pack("{s:s}", "op", "bogus");
    json_t *reply;
    assert_int_equal(
        at_initctl_request(sb->c, req, &reply, NULL, NULL, TIMEOUT_MS, err, sizeof err), AT_EINVAL);
    assert_non_null(reply);
    assert_string_equal(err, "unknown op 'bogus'");
    json_decref(reply);
    json_decref(req);
    at_initctl_t *none;
    assert_int_equal(
        at_initctl_connect("/tmp/atelier-initctl-test-none.sock", 30, &none, err, sizeof err),
        AT_ETIMEOUT);
    /* a fifth connection is refused */
    at_initctl_t *more[3], *fifth;
    for (int i = 0; i < 3; i++)
        assert_int_equal(at_initctl_connect(sb->sock, TIMEOUT_MS, &more[i], err, sizeof err),
                         AT_OK);
    assert_int_equal(at_initctl_connect(sb->sock, TIMEOUT_MS, &fifth, err, sizeof err), AT_EBUSY);
    for (int i = 0; i < 3; i++)
        at_initctl_close(more[i]);
}

/* Events that arrive while a request waits are queued, not lost. */
static void test_events_interleaved(void **state)
{
    struct sandbox *sb = *state;
    char err[256];
    const char *t[] = {"true", NULL};
    at_initctl_spawn_t spec = {.argv = t, .env = ENV};
    pid_t pids[20];
    for (int i = 0; i < 20; i++) {
        at_initctl_proc_fds_t p;
        assert_int_equal(at_initctl_spawn(sb->c, &spec, &p, TIMEOUT_MS, err, sizeof err), AT_OK);
        pids[i] = p.pid;
        for (int k = 0; k < 3; k++)
            close(p.fds[k]);
    }
    usleep(200 * 1000);
    assert_int_equal(at_initctl_ping(sb->c, NULL, TIMEOUT_MS, err, sizeof err), AT_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(wait_exit(sb->c, pids[i]).code, 0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_spawn_round_trip(void **state)
{
    struct sandbox *sb = *state;
    char err[256];
    enum { N = 1000 };
    static int64_t us[N];
    const char *t[] = {"true", NULL};
    for (int pty = 0; pty < 2; pty++) {
        at_initctl_spawn_t spec = {.argv = t, .env = ENV, .pty = pty};
        for (int i = 0; i < N; i++) {
            at_initctl_proc_fds_t p;
            int64_t t0 = now_us();
            assert_int_equal(at_initctl_spawn(sb->c, &spec, &p, TIMEOUT_MS, err, sizeof err),
                             AT_OK);
            us[i] = now_us() - t0;
            for (int k = 0; k < 3; k++)
                if (p.fds[k] >= 0)
                    close(p.fds[k]);
        }
        qsort(us, N, sizeof us[0], cmp_i64);
        printf("[initctl] spawn round trip (`true`, %s, C client): p50 %.3f ms p99 %.3f ms "
               "max %.3f ms over %d\n",
               pty ? "pty" : "pipes", us[N / 2] / 1000.0, us[N * 99 / 100] / 1000.0,
               us[N - 1] / 1000.0, N);
    }
}

static void test_shutdown(void **state)
{
    struct sandbox *sb = *state;
    char err[256];
    const char *sl[] = {"sh", "-c", "trap '' TERM; echo ready; exec sleep 100", NULL};
    at_initctl_spawn_t spec = {.argv = sl, .env = ENV};
    at_initctl_proc_fds_t p;
    assert_int_equal(at_initctl_spawn(sb->c, &spec, &p, TIMEOUT_MS, err, sizeof err), AT_OK);
    read_until(p.fds[1], "ready"); /* SIGTERM is ignored from here on */
    int64_t t0 = now_us();
    assert_int_equal(at_initctl_shutdown(sb->c, 200, TIMEOUT_MS, err, sizeof err), AT_OK);
    int64_t took = now_us() - t0;
    printf("[initctl] shutdown with a child ignoring SIGTERM, grace 200 ms: %.1f ms\n",
           took / 1000.0);
    assert_true(took >= 200 * 1000);
    int status;
    assert_int_equal(waitpid(sb->bwrap, &status, 0), sb->bwrap);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sb->bwrap = -1;
    json_t *ev;
    at_err_t rc;
    /* the exit event came before the reply; then the connection ends */
    while ((rc = at_initctl_read_event(sb->c, &ev, TIMEOUT_MS, err, sizeof err)) == AT_OK)
        json_decref(ev);
    assert_int_equal(rc, AT_ECLOSED);
    for (int k = 0; k < 3; k++)
        close(p.fds[k]);
}

int main(void)
{
    if (geteuid() != 0 || access(BWRAP, X_OK) != 0) {
        printf("skipped: needs root and %s\n", BWRAP);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pty_and_pipes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
