/*
 * The sandbox seccomp filter on the real kernel: a forked child installs it
 * (no_new_privs + filter, as bwrap does) and every denied call must fail with
 * EPERM (ENOSYS for clone3) while ordinary calls keep working; a syscall from a
 * foreign ABI kills the process. Dangerous calls are made with arguments the
 * kernel would reject anyway (bad magic, bad clock id), so EPERM proves the
 * filter answered and a missing filter could never reboot the host.
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
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox_fixture.h"
#include "seccomp.h"

static int skip_unless_root(void)
{
    if (geteuid() != 0) {
        print_message("skipped: needs root (mount and namespace calls must be possible "
                      "without the filter for the EPERM to mean anything)\n");
        return 1;
    }
    return 0;
}

static void test_build(void **state)
{
    (void)state;
    struct sock_fprog prog;
    char err[256] = "";
    assert_int_equal(at_seccomp_build(&prog, err, sizeof err), AT_OK);
    assert_non_null(prog.filter);
    assert_true(prog.len > 50 && prog.len < AT_SECCOMP_MAX_INSNS);
    print_message("filter: %u instructions\n", prog.len);

    int fd = -1;
    assert_int_equal(at_seccomp_write_fd(&fd, err, sizeof err), AT_OK);
    assert_true(fd >= 0);
    /* sealed, at offset 0, and byte-identical to the program */
    int seals = fcntl(fd, F_GET_SEALS);
    assert_true(seals & F_SEAL_WRITE);
    assert_true(seals & F_SEAL_SEAL);
    size_t len = prog.len * sizeof(struct sock_filter);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, len + 1), (ssize_t)len);
    assert_memory_equal(buf, prog.filter, len);
    assert_int_equal(write(fd, "x", 1), -1);
    free(buf);
    close(fd);
    at_seccomp_free(&prog);
}

/* Child side: one line per failed expectation into fd, exit 0 when all held. */
static int bad;
static void expect(int fd, const char *what, long rc, int want_errno)
{
    int e = errno;
    int ok = want_errno ? (rc == -1 && e == want_errno) : rc >= 0;
    if (!ok) {
        dprintf(fd, "%s: rc=%ld errno=%d (%s), wanted %s\n", what, rc, e, strerror(e),
                want_errno ? strerror(want_errno) : "success");
        bad++;
    }
}

static void child_checks(int out)
{
    /* A private mount namespace first: should the filter let a mount through,
     * it stays in this child. */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        dprintf(out, "setup: private mount namespace: %s\n", strerror(errno));
        _exit(2);
    }
    int ptm = posix_openpt(O_RDWR | O_NOCTTY);
    char err[256];
    if (at_seccomp_install(err, sizeof err) != AT_OK) {
        dprintf(out, "install: %s\n", err);
        _exit(3);
    }
    char c = 'x';
    expect(out, "mount", mount("none", "/mnt", "tmpfs", 0, NULL), EPERM);
    expect(out, "umount2", umount2("/nonexistent-hsbx", 0), EPERM);
    expect(out, "ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL), EPERM);
    expect(out, "unshare", unshare(CLONE_NEWUTS), EPERM);
    expect(out, "setns", setns(-1, 0), EPERM);
    expect(out, "pivot_root", syscall(SYS_pivot_root, "/x", "/y"), EPERM);
    expect(out, "ioctl TIOCSTI", ptm >= 0 ? ioctl(ptm, TIOCSTI, &c) : -1, EPERM);
    /* the kernel only looks at the low 32 bits of the request; so must the filter */
    expect(out, "ioctl TIOCSTI high bits",
           ptm >= 0 ? syscall(SYS_ioctl, ptm, 0xdead00000000UL | TIOCSTI, &c) : -1, EPERM);
    expect(out, "ioctl TIOCLINUX", ptm >= 0 ? ioctl(ptm, TIOCLINUX, &c) : -1, EPERM);
    expect(out, "clone NEWUSER", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM);
    expect(out, "clone NEWNET", syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0), EPERM);
#ifdef SYS_clone3
    expect(out, "clone3", syscall(SYS_clone3, NULL, 0), ENOSYS);
#endif
    expect(out, "personality ADDR_NO_RANDOMIZE", personality(ADDR_NO_RANDOMIZE), EPERM);
    expect(out, "reboot (bad magic)", syscall(SYS_reboot, 0, 0, 0, NULL), EPERM);
    expect(out, "clock_settime (bad clock)",
           syscall(SYS_clock_settime, -42, &(struct timespec){0, 0}), EPERM);
    expect(out, "kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xffffffffUL), EPERM);
    expect(out, "init_module", syscall(SYS_init_module, NULL, 0, ""), EPERM);
    expect(out, "bpf", syscall(SYS_bpf, -1, NULL, 0), EPERM);
    expect(out, "keyctl", syscall(SYS_keyctl, -1, 0, 0, 0, 0), EPERM);
    expect(out, "perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
    expect(out, "userfaultfd", syscall(SYS_userfaultfd, 0), EPERM);
    expect(out, "open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0), EPERM);
    expect(out, "swapoff", syscall(SYS_swapoff, "/nonexistent-hsbx"), EPERM);
    expect(out, "fsopen", syscall(SYS_fsopen, "tmpfs", 0), EPERM);
    expect(out, "open_tree", syscall(SYS_open_tree, -1, "/", 0), EPERM);
    expect(out, "iopl", syscall(SYS_iopl, 3), EPERM);
    /* and a process can still live */
    expect(out, "getpid", getpid(), 0);
    expect(out, "personality query", personality(0xffffffff), 0);
    expect(out, "personality PER_LINUX", personality(PER_LINUX), 0);
    expect(out, "ioctl TIOCGPTN", ptm >= 0 ? ioctl(ptm, TIOCGPTN, &(unsigned){0}) : -1, 0);
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    expect(out, "open", fd, 0);
    char buf[4096];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    expect(out, "read", n, 0);
    if (n > 0) {
        buf[n] = '\0';
        if (!strstr(buf, "Seccomp:\t2") || !strstr(buf, "NoNewPrivs:\t1")) {
            dprintf(out, "status: seccomp mode 2 and no_new_privs expected\n");
            bad++;
        }
    }
    pid_t pid = fork(); /* clone without namespace flags */
    expect(out, "fork", pid, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    _exit(bad ? 1 : 0);
}

static void test_denied_and_allowed(void **state)
{
    (void)state;
    if (skip_unless_root())
        skip();
    int p[2];
    pid_t pid = fork_with_pipe(p);
    if (pid == 0)
        child_checks(p[1]);
    char report[4096] = "";
    size_t used = 0;
    ssize_t n;
    while ((n = read(p[0], report + used, sizeof report - 1 - used)) > 0)
        used += (size_t)n;
    report[used] = '\0';
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (report[0])
        print_message("%s", report);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A foreign ABI must kill, not merely fail: the syscall numbers differ there. */
static void run_killed(void (*body)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        if (at_seccomp_install(err, sizeof err) != AT_OK)
            _exit(3);
        body();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSYS);
}

#if defined(__x86_64__)
static void x32_getpid(void)
{
    syscall(0x40000000L | SYS_getpid);
}

static void i386_getpid(void)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory"); /* i386 getpid */
    (void)ret;
}
#endif

/* A kernel booted with ia32_emulation=0 (or built without it) faults int
 * 0x80 with SIGSEGV before any filter runs: the ABI is not there to block. */
static int ia32_available(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* cmocka's handler would catch the fault */
        i386_getpid();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status);
}

static void test_foreign_abi_killed(void **state)
{
    (void)state;
#if defined(__x86_64__)
    run_killed(x32_getpid);
    if (ia32_available())
        run_killed(i386_getpid);
    else
        print_message("i386 ABI: kernel without ia32 emulation (int 0x80 faults); not checked\n");
#else
    print_message("skipped: x32 and i386 ABIs exist only on x86_64\n");
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_denied_and_allowed),
        cmocka_unit_test(test_foreign_abi_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
