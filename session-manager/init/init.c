/* atelier-init: PID 1 of every sandbox.
 *
 *   atelier-init --socket /run/atelier/init.sock [--workdir /workspace]
 *   atelier-init --listen-fd N [--workdir /workspace]
 *
 * It reaps every process of the sandbox, starts processes when the session-manager asks
 * over a SOCK_SEQPACKET Unix socket, and hands their PTY master or pipes to the manager
 * with SCM_RIGHTS, keeping its own copies so a manager that dies and comes back can
 * attach again: the sandbox never depends on the manager process.
 *
 * Single-threaded epoll loop over the listening socket, a signalfd for SIGCHLD and up to
 * INIT_MAX_CLIENTS clients. Only peers outside the sandbox's pid namespace are served
 * (SO_PEERCRED shows them as pid 0 here): processes inside must not drive it, so init
 * is only usable as the first process of its own pid namespace (bwrap --unshare-pid
 * --as-pid-1). A client
 * error never ends init; only the "shutdown" request or SIGKILL does. Links nothing but
 * libc and jansson, so it runs in a sandbox that has only /usr. */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* epoll data for the two descriptors that are not clients. */
#define TAG_LISTEN ((uint64_t)-1)
#define TAG_SIGNAL ((uint64_t)-2)

void init_log(const char *level, const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "level=%s proc=atelier-init ", level);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* stderr may be a pipe whose reader is gone: SIGPIPE is ignored, the line is lost. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t init_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t init_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}
static void on_signal(struct init_state *st)
{
    struct signalfd_siginfo si[16];
    while (read(st->sig_fd, si, sizeof si) > 0) {
    }
    init_proc_reap(st);
}
static void loop(struct init_state *st)
{
    struct epoll_event evs[INIT_MAX_CLIENTS + 2];
    while (!st->done) {
        int n = epoll_wait(st->epfd, evs, INIT_MAX_CLIENTS + 2, -1);
        if (n < 0) {
            if (errno != EINTR)
                init_log("error", "event=epoll_wait_failed error=\"%s\"", strerror(errno));
            continue;
        }
        for (int i = 0; i < n && !st->done; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_SIGNAL) {
                on_signal(st);
            } else if (tag == TAG_LISTEN) {
                init_accept_clients(st);
            } else if (tag < INIT_MAX_CLIENTS) {
                struct client *c = &st->clients[tag];
                if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                    init_client_flush(st, c, MSG_DONTWAIT);
                if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    init_client_read(st, c);
            }
        }
    }
}

/* ---- start-up --------------------------------------------------------------------- */

struct options {
    const char *socket_path;
    int listen_fd;
    const char *workdir;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: atelier-init (--socket PATH | --listen-fd N) [--workdir DIR]\n"
               "  --socket PATH   create and listen on a SOCK_SEQPACKET Unix socket at PATH\n"
               "  --listen-fd N   use the listening SOCK_SEQPACKET socket inherited as fd N\n"
               "  --workdir DIR   default working directory of spawned processes (/)\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    o->socket_path = NULL;
    o->listen_fd = -1;
    o->workdir = "/";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--socket") != 0 && strcmp(a, "--workdir") != 0 &&
            strcmp(a, "--listen-fd") != 0) {
            fprintf(stderr, "atelier-init: unknown option '%s'\n", a);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "atelier-init: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--socket") == 0) {
            o->socket_path = v;
        } else if (strcmp(a, "--workdir") == 0) {
            o->workdir = v;
        } else {
            char *end;
            long fd = strtol(v, &end, 10);
            if (*end || fd < 3 || fd > 65535) {
                fprintf(stderr, "atelier-init: bad --listen-fd '%s'\n", v);
                return -1;
            }
            o->listen_fd = (int)fd;
        }
    }
    if (!o->socket_path == (o->listen_fd < 0)) {
        fprintf(stderr, "atelier-init: give exactly one of --socket and --listen-fd\n");
        return -1;
    }
    return 0;
}

/* Children get 0-2 from the pty or pipes, and every descriptor init opens must land
 * above 2 so dup2 onto 0-2 in a child never hits one of them: fill gaps with /dev/null. */
static void ensure_stdio(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int n = open("/dev/null", O_RDWR);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

/* A log line must never block PID 1: when stderr is a pipe or socket whose reader
 * stalls, lines are dropped instead (a file or a terminal is left as it is). */
static void protect_stderr(void)
{
    struct stat sb;
    if (fstat(STDERR_FILENO, &sb) == 0 && (S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode)))
        fcntl(STDERR_FILENO, F_SETFL, fcntl(STDERR_FILENO, F_GETFL) | O_NONBLOCK);
}

/* Signals: SIGCHLD arrives through a signalfd; the ones a process inside could send to
 * stop init are ignored (the kernel already drops them for a pid namespace's init, this
 * also covers running outside one). */
static int setup_signals(struct init_state *st)
{
    static const int ignored[] = {SIGTERM, SIGINT,  SIGHUP,  SIGPIPE, SIGQUIT,
                                  SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        signal(ignored[i], SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    st->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return st->sig_fd < 0 ? -1 : 0;
}

static int listen_on_path(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
        unlink(path); /* left by an init that was SIGKILLed */
    mode_t old = umask(0077);
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* An inherited socket must be a listening SOCK_SEQPACKET one; it is made non-blocking
 * and close-on-exec so no child inherits it. */
static int adopt_listen_fd(int fd)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return -1;
    len = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0)
        return -1;
    if (type != SOCK_SEQPACKET || !acc) {
        errno = EINVAL;
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        return -1;
    return fd;
}

/* More descriptors for init itself (three per pipe child), the original limit for
 * children: some programs still select() and break on large numbers. */
static void raise_nofile(struct init_state *st)
{
    if (getrlimit(RLIMIT_NOFILE, &st->nofile_orig) < 0)
        return;
    struct rlimit r = st->nofile_orig;
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}

static int setup(struct init_state *st, const struct options *o)
{
    memset(st, 0, sizeof *st);
    st->epfd = st->listen_fd = st->sig_fd = -1;
    for (int i = 0; i < INIT_MAX_CLIENTS; i++)
        st->clients[i].fd = -1;
    st->workdir = o->workdir;
    st->start_mono_ms = init_mono_ms();
    ensure_stdio();
    protect_stderr();
    raise_nofile(st);
    /* Not dumpable: processes of the sandbox run as init's uid, and must not ptrace it
     * or open its copies of every terminal through /proc/1/fd. exec makes children
     * dumpable again. */
    prctl(PR_SET_DUMPABLE, 0);
    /* Outside a pid namespace (debugging by hand) orphans still come back to us. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (setup_signals(st) < 0) {
        init_log("error", "event=start_failed step=signalfd error=\"%s\"", strerror(errno));
        return -1;
    }
    if (o->socket_path) {
        st->listen_fd = listen_on_path(o->socket_path);
        st->socket_path = o->socket_path;
    } else {
        st->listen_fd = adopt_listen_fd(o->listen_fd);
    }
    if (st->listen_fd < 0) {
        init_log("error", "event=start_failed step=listen socket=%s fd=%d error=\"%s\"",
                 o->socket_path ? o->socket_path : "-", o->listen_fd, strerror(errno));
        return -1;
    }
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG_SIGNAL};
    if (st->epfd < 0 || epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->listen_fd, &lev) < 0 ||
        epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->sig_fd, &sev) < 0) {
        init_log("error", "event=start_failed step=epoll error=\"%s\"", strerror(errno));
        return -1;
    }
    return 0;
}

static void teardown(struct init_state *st)
{
    init_clients_final_flush(st);
    if (st->socket_path)
        unlink(st->socket_path);
    for (size_t i = 0; i < st->nprocs; i++)
        for (int j = 0; j < st->procs[i].nfds; j++)
            if (st->procs[i].fds[j] >= 0)
                close(st->procs[i].fds[j]);
    if (st->listen_fd >= 0)
        close(st->listen_fd);
    if (st->sig_fd >= 0)
        close(st->sig_fd);
    if (st->epfd >= 0)
        close(st->epfd);
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_args(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    static struct init_state st; /* ~60 KiB of fixed tables: not on the stack */
    if (setup(&st, &o) < 0) {
        teardown(&st);
        return 1;
    }
    init_log("info", "event=started pid=%d socket=%s workdir=%s", (int)getpid(),
             o.socket_path ? o.socket_path : "(inherited)", o.workdir);
    loop(&st);
    teardown(&st);
    init_log("info", "event=stopped");
    return 0;
}
