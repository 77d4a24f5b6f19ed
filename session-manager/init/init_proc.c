/* atelier-init's process table: spawning children (on a PTY or on pipes), reaping
 * everything that ends (spawned children and orphans re-parented to PID 1), and the ring
 * of exit records a manager that was away collects later. */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* What a child that failed before exec tells its parent through the CLOEXEC status pipe:
 * nothing arrives when exec succeeded. */
struct spawn_fail {
    int err_no;
    char stage[16];
};

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* In the child: report which step failed and end without running any atexit handler
 * of init. */
static __attribute__((noreturn)) void child_fail(int status_fd, const char *stage)
{
    struct spawn_fail f = {.err_no = errno};
    snprintf(f.stage, sizeof f.stage, "%s", stage);
    ssize_t w = write(status_fd, &f, sizeof f);
    (void)w;
    _exit(127);
}

/* Closes every descriptor from 3 up except keep, so the child holds only its stdio and
 * the status pipe (which exec closes). */
static void close_other_fds(int keep)
{
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
}

/* The child between fork and exec. stdio is either the PTY slave (which becomes the
 * controlling terminal of a new session) or the three pipe ends. Dispositions init
 * ignores are reset: an ignored SIGINT would survive exec and make ctrl-C useless. */
static __attribute__((noreturn)) void child_exec(const struct init_state *st,
                                                 const struct spawn_req *r, int slave,
                                                 const int stdio[3], int status_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    /* glibc refuses its two reserved real-time signals (32, 33) in signal(),
     * but an ignored one inherited from whoever started the sandbox survives
     * exec all the same: reset those with the raw system call */
    for (int sig = 32; sig < SIGRTMIN; sig++) {
        struct {
            void *handler;
            unsigned long flags;
            void *restorer;
            unsigned long mask;
        } dfl = {SIG_DFL, 0, NULL, 0};
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    }
    if (setsid() < 0)
        child_fail(status_fd, "setsid");
    if (r->pty) {
        if (ioctl(slave, TIOCSCTTY, 0) < 0)
            child_fail(status_fd, "TIOCSCTTY");
        for (int i = 0; i < 3; i++)
            if (dup2(slave, i) < 0)
                child_fail(status_fd, "dup2");
    } else {
        for (int i = 0; i < 3; i++)
            if (dup2(stdio[i], i) < 0)
                child_fail(status_fd, "dup2");
    }
    close_other_fds(status_fd);
    setrlimit(RLIMIT_NOFILE, &st->nofile_orig);
    if (chdir(r->cwd) < 0)
        child_fail(status_fd, "chdir");
    if (r->envp)
        environ = r->envp; /* so execvp searches the child's own PATH */
    execvp(r->argv[0], r->argv);
    child_fail(status_fd, "exec");
}

/* Opens a PTY pair: the master (init's and the manager's end) and the slave (the
 * child's). TIOCGPTPEER opens the slave without a path lookup in /dev/pts. */
static int open_pty(const struct spawn_req *r, int *master, int *slave)
{
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0)
        return -1;
    if (grantpt(*master) < 0 || unlockpt(*master) < 0)
        goto fail;
    *slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) {
        char name[64];
        if (ptsname_r(*master, name, sizeof name) != 0)
            goto fail;
        *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (*slave < 0)
            goto fail;
    }
    struct winsize ws = {.ws_row = r->rows, .ws_col = r->cols};
    if (ioctl(*master, TIOCSWINSZ, &ws) < 0) {
        close_fd(slave);
        goto fail;
    }
    return 0;
fail:;
    int e = errno;
    close_fd(master);
    errno = e;
    return -1;
}

/* Three pipes; init keeps {stdin write, stdout read, stderr read}, the child gets
 * {stdin read, stdout write, stderr write}. All O_CLOEXEC: dup2 onto 0-2 clears it in
 * the child only. */
static int open_pipes(int mine[3], int child[3])
{
    int p[3][2];
    int made = 0;
    for (; made < 3; made++)
        if (pipe2(p[made], O_CLOEXEC) < 0)
            goto fail;
    mine[0] = p[0][1], child[0] = p[0][0];
    mine[1] = p[1][0], child[1] = p[1][1];
    mine[2] = p[2][0], child[2] = p[2][1];
    return 0;
fail:;
    int e = errno;
    for (int i = 0; i < made; i++) {
        close(p[i][0]);
        close(p[i][1]);
    }
    errno = e;
    return -1;
}

/* Waits for the child's verdict on the status pipe: end of file means exec succeeded
 * (the pipe is CLOEXEC); a struct spawn_fail means it did not. Blocks for as long as the
 * child takes to reach exec, which is short: nothing in between can wait on the sandbox. */
static int read_verdict(int status_fd, struct spawn_fail *f)
{
    size_t got = 0;
    while (got < sizeof *f) {
        ssize_t n = read(status_fd, (char *)f + got, sizeof *f - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got == sizeof *f ? -1 : 0;
}

/* The program's base name, cut to fit without splitting a UTF-8 sequence (it goes back
 * out as a JSON string, which must stay valid UTF-8). */
static void set_argv0(struct proc *p, const char *argv0)
{
    const char *base = strrchr(argv0, '/');
    base = base && base[1] ? base + 1 : argv0;
    size_t n = strlen(base);
    if (n >= sizeof p->argv0) {
        n = sizeof p->argv0 - 1;
        while (n > 0 && ((unsigned char)base[n] & 0xC0) == 0x80)
            n--; /* base[n] would be cut off mid-sequence: end before its lead byte */
    }
    memcpy(p->argv0, base, n);
    p->argv0[n] = '\0';
}

struct proc *init_proc_spawn(struct init_state *st, const struct spawn_req *r, char *err,
                             size_t errlen, int *err_no)
{
    *err_no = 0;
    if (st->nprocs >= INIT_MAX_PROCS) {
        *err_no = EAGAIN;
        snprintf(err, errlen, "spawn: too many processes (max %d)", INIT_MAX_PROCS);
        return NULL;
    }
    int mine[3] = {-1, -1, -1}, child[3] = {-1, -1, -1}, slave = -1, status[2];
    if (r->pty ? open_pty(r, &mine[0], &slave) : open_pipes(mine, child)) {
        *err_no = errno;
        snprintf(err, errlen, "spawn: %s: %s", r->pty ? "open pty" : "pipe", strerror(errno));
        return NULL;
    }
    pid_t pid = -1;
    if (pipe2(status, O_CLOEXEC) == 0) {
        pid = fork();
        if (pid == 0)
            child_exec(st, r, slave, child, status[1]);
        if (pid < 0)
            *err_no = errno;
        close(status[1]);
    } else {
        *err_no = errno;
        status[0] = -1;
    }
    close_fd(&slave);
    for (int i = 0; i < 3; i++)
        close_fd(&child[i]);

    struct spawn_fail f;
    if (pid > 0 && read_verdict(status[0], &f) < 0) {
        waitpid(pid, NULL, 0); /* it has _exit(127)ed: no zombie, no exit record */
        *err_no = f.err_no;
        f.stage[sizeof f.stage - 1] = '\0';
        snprintf(err, errlen, "%s %s: %s", f.stage,
                 strcmp(f.stage, "chdir") == 0 ? r->cwd : r->argv[0], strerror(f.err_no));
        pid = -1;
    } else if (pid < 0) {
        snprintf(err, errlen, "spawn: fork: %s", strerror(*err_no));
    }
    if (status[0] >= 0)
        close(status[0]);
    if (pid < 0) {
        for (int i = 0; i < 3; i++)
            close_fd(&mine[i]);
        return NULL;
    }

    struct proc *p = &st->procs[st->nprocs++];
    memset(p, 0, sizeof *p);
    p->pid = pid;
    p->pty = r->pty;
    p->nfds = r->pty ? 1 : 3;
    memcpy(p->fds, mine, sizeof p->fds);
    set_argv0(p, r->argv[0]);
    p->started_ms = init_wall_ms();
    return p;
}

struct proc *init_proc_find(struct init_state *st, pid_t pid)
{
    for (size_t i = 0; i < st->nprocs; i++)
        if (st->procs[i].pid == pid)
            return &st->procs[i];
    return NULL;
}

int init_proc_close_stdin(struct proc *p)
{
    if (p->pty || p->fds[0] < 0) {
        errno = p->pty ? EINVAL : EBADF;
        return -1;
    }
    close_fd(&p->fds[0]);
    return 0;
}

static void record_exit(struct init_state *st, pid_t pid, int status)
{
    if (st->exit_len == INIT_EXIT_RING) {
        st->exit_head = (st->exit_head + 1) % INIT_EXIT_RING;
        st->exit_len--;
        st->exit_dropped++;
    }
    struct exit_rec *e = &st->exits[(st->exit_head + st->exit_len++) % INIT_EXIT_RING];
    e->seq = ++st->exit_seq;
    e->pid = pid;
    e->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    e->code = WIFSIGNALED(status) ? 128 + e->signal : WEXITSTATUS(status);
    e->ended_ms = init_wall_ms();

    json_t *ev = json_pack("{s:s, s:I, s:i, s:i, s:I, s:I}", "event", "exit", "pid",
                           (json_int_t)pid, "code", e->code, "signal", e->signal, "ended_ms",
                           (json_int_t)e->ended_ms, "seq", (json_int_t)e->seq);
    if (ev) {
        init_broadcast(st, ev);
        json_decref(ev);
    }
}

/* A spawned child ended: its record goes to the ring and out as an event, and init's
 * copies of its descriptors are closed (the manager keeps its own). */
static void forget_proc(struct init_state *st, struct proc *p, int status)
{
    record_exit(st, p->pid, status);
    for (int i = 0; i < p->nfds; i++)
        close_fd(&p->fds[i]);
    size_t idx = (size_t)(p - st->procs);
    st->procs[idx] = st->procs[--st->nprocs];
}

int init_proc_reap(struct init_state *st)
{
    int reaped = 0;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return reaped;
        reaped++;
        struct proc *p = init_proc_find(st, pid);
        if (p)
            forget_proc(st, p, status);
    }
}

void init_exits_ack(struct init_state *st, uint64_t ack)
{
    while (st->exit_len > 0 && st->exits[st->exit_head].seq <= ack) {
        st->exit_head = (st->exit_head + 1) % INIT_EXIT_RING;
        st->exit_len--;
    }
}

const struct exit_rec *init_exits_at(const struct init_state *st, size_t i)
{
    if (i >= st->exit_len)
        return NULL;
    return &st->exits[(st->exit_head + i) % INIT_EXIT_RING];
}

/* Is any child left? waitpid with WNOHANG tells "none at all" (ECHILD) apart from
 * "some, still running" (0). */
static bool children_left(struct init_state *st)
{
    init_proc_reap(st);
    return !(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

/* From PID 1, kill(-1) reaches every process of the pid namespace but init itself. When
 * init runs as an ordinary process (by hand, for debugging) kill(-1) would reach the whole
 * host, so only the process groups it spawned are signalled. */
static void signal_all(struct init_state *st, int sig)
{
    if (getpid() == 1) {
        kill(-1, sig);
        return;
    }
    for (size_t i = 0; i < st->nprocs; i++)
        kill(-st->procs[i].pid, sig);
}

void init_proc_kill_all(struct init_state *st, int grace_ms)
{
    signal_all(st, SIGTERM);
    int64_t deadline = init_mono_ms() + grace_ms;
    while (children_left(st) && init_mono_ms() < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    signal_all(st, SIGKILL);
    /* SIGKILL cannot be caught; the deadline only matters outside a pid namespace, where
     * children init did not signal may outlive it. */
    deadline = init_mono_ms() + 5000;
    while (children_left(st) && init_mono_ms() < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
