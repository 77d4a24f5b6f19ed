/*
 * One sandbox: the bubblewrap command line and its launch.
 *
 * Inside the sandbox (what a workspace process sees):
 *   /                    bwrap's tmpfs, remounted read-only once everything is in place
 *   /usr                 host /usr, read-only; /bin /sbin /lib /lib64 are symlinks into it
 *   /etc                 only: passwd, group and hosts written for the sandbox (the run
 *                        dir's copies, bound read-only) and read-only binds of what bash,
 *                        git, Python and TLS clients read (ld.so.cache, nsswitch.conf,
 *                        alternatives (numpy's BLAS), ssl, localtime, mime.types,
 *                        python3*, ...); resolv.conf only with network; never shadow, the
 *                        host's passwd/group/hosts, ld.so.preload or machine-specific config
 *   /workspace, /app     the volume, read-write (also the working directory and $HOME)
 *   /run/atelier         the run dir, read-write: init.sock lives here
 *   /opt/atelier/atelier-init   the init binary, read-only (when init_path is set)
 *   /tmp, /var/tmp       private tmpfs (charged to the cgroup's memory)
 *   /proc, /dev          the sandbox's own procfs; a minimal dev (null, zero, random, tty,
 *                        pts, shm); no /sys
 *   namespaces           user (uid/gid 1000 inside, mapped to host_uid/host_gid), pid (the
 *                        command is PID 1), mount, ipc, uts (hostname), cgroup, and net
 *                        (only lo) unless network is "host"
 *   limits               no capabilities, no_new_privs, the seccomp filter of seccomp.h, a
 *                        new session (no TIOCSTI into the manager's tty), and no further
 *                        user namespaces (--disable-userns, besides the seccomp rule)
 *   environment          PATH, HOME=/workspace, LANG=C.UTF-8, TERM, USER, LOGNAME, SHELL and
 *                        the spec's extra entries; nothing inherited from the manager
 *
 * The launch: fork; the child moves into the cgroup atelier/<session> (so every
 * process of the sandbox is in it from the start), calls setsid, resets signal
 * mask and dispositions, keeps only stdin (/dev/null), stdout and stderr (both
 * the run dir's sandbox.log), the seccomp memfd (fd 3) and bwrap's --info-fd
 * pipe (fd 4), drops to the unprivileged host uid/gid if one is configured, and
 * execs bwrap. No --die-with-parent: the sandbox outlives the launching process
 * (a session-manager restart, a worker thread's caller going away).
 *
 * sandbox.log is written by bwrap and by PID 1 through an inherited fd; it is on
 * the host's disk and not size-limited, so PID 1 must not hand that fd to
 * workspace processes and must not be dumpable (atelier-init does both:
 * PR_SET_DUMPABLE 0 keeps /proc/1/fd/2 out of reach of the sandbox user).
 *
 * Host requirements: bubblewrap >= 0.8 (--disable-userns, --remount-ro);
 * unprivileged user namespaces when host_uid != 0 (the default of Debian 12);
 * the sandbox host uid must be able to reach volume_dir, run_dir and init_path
 * (o+x on their parents). Every sandbox may share one host uid: they cannot
 * see each other's processes (pid namespaces) or files (mount namespaces).
 */
#ifndef ATELIER_SANDBOX_BWRAP_H
#define ATELIER_SANDBOX_BWRAP_H

#include <stddef.h>
#include <sys/types.h>

#include "atelier/err.h"

#define AT_BWRAP_PATH "/usr/bin/bwrap"
#define AT_SANDBOX_INIT_INSIDE                                                                     \
    "/opt/atelier/atelier-init" /* not under /sbin: a symlink into ro /usr */
#define AT_SANDBOX_RUN_INSIDE "/run/atelier"
#define AT_SANDBOX_SOCKET_INSIDE "/run/atelier/init.sock"
#define AT_SANDBOX_WORKDIR "/workspace"
#define AT_SANDBOX_UID 1000
#define AT_SANDBOX_USER "user"
#define AT_SANDBOX_LOG "sandbox.log" /* in run_dir: bwrap's and init's stdout/stderr */
#define AT_BWRAP_MAX_ARGS 320
#define AT_BWRAP_ARGBUF 8192
#define AT_BWRAP_INFO_TIMEOUT_MS 10000 /* bwrap reports the child pid within this */

typedef enum {
    AT_SANDBOX_NET_NONE = 0, /* own network namespace, loopback only (default) */
    AT_SANDBOX_NET_HOST,     /* the host's network (deployment setting "egress") */
} at_sandbox_net_t;

typedef struct {
    const char *src; /* host path */
    const char *dst; /* path inside (NULL = same as src) */
} at_sandbox_bind_t;

typedef struct {
    const char *session;    /* cgroup atelier/<session> must exist (at_cgroup_create) */
    const char *volume_dir; /* host dir: /workspace and /app */
    const char *run_dir;    /* host dir: /run/atelier; gets passwd, group, hosts, sandbox.log */
    const char *etc_dir;    /* at_bwrap_prepare_etc's copy, bound at /etc; NULL: one bind per
                             * host /etc entry (about 25 more binds, each a mountinfo read) */
    const char *init_path;  /* host binary bound at AT_SANDBOX_INIT_INSIDE; NULL: none */
    /* Command inside. NULL: AT_SANDBOX_INIT_INSIDE --socket /run/atelier/init.sock
     * --workdir /workspace (needs init_path). */
    const char *const *argv;
    uid_t host_uid; /* unprivileged host ids to run bwrap as; 0 = stay root */
    gid_t host_gid;
    uid_t uid; /* inside; 0 = AT_SANDBOX_UID */
    gid_t gid;
    at_sandbox_net_t net;
    const char *hostname;              /* NULL = "workspace" */
    const char *term;                  /* TERM; NULL = "xterm-256color" */
    const char *const *env;            /* extra "NAME=VALUE" entries, NULL-terminated, or NULL */
    const at_sandbox_bind_t *ro_binds; /* extra read-only binds */
    size_t n_ro_binds;
    const char *bwrap_path; /* NULL = AT_BWRAP_PATH */
} at_sandbox_spec_t;

/* bwrap's argv, built without running anything (tests read it). Strings are
 * either the spec's (which must outlive it) or kept in buf. */
typedef struct {
    const char *argv[AT_BWRAP_MAX_ARGS + 1];
    size_t argc;
    char buf[AT_BWRAP_ARGBUF];
    size_t used;
} at_bwrap_argv_t;

typedef struct {
    pid_t bwrap_pid; /* our child: bwrap's monitor process (in the cgroup too) */
    pid_t init_pid;  /* the sandbox's PID 1 as seen from the host (bwrap's "child-pid") */
    int pidfd;       /* pidfd of bwrap_pid (readable when it exits), or -1; caller closes */
} at_sandbox_proc_t;

/* Build the argv for spec, with the seccomp program on seccomp_fd and bwrap's
 * JSON info on info_fd (-1 = none) as they will be numbered in bwrap. */
at_err_t at_bwrap_build_argv(const at_sandbox_spec_t *spec, int seccomp_fd, int info_fd,
                             at_bwrap_argv_t *out, char *errbuf, size_t errlen);

/* Copy what sandboxes read from the host's /etc (the list above: never
 * shadow, the host's passwd/group/hosts, machine-specific config, nor
 * anything "others" cannot read) into base/.etc-<hash of the content>, with
 * empty passwd, group and hosts for the run dir's files to be bound over;
 * out gets that path. An unchanged host /etc finds its copy in place. A
 * changed one gets a new directory; the old one is left for sandboxes still
 * bound to it. Done once per session-manager start (tens of ms). */
at_err_t at_bwrap_prepare_etc(const char *base, at_sandbox_net_t net, char *out, size_t outcap,
                              char *errbuf, size_t errlen);

/* Write passwd, group and hosts for the sandbox into run_dir (atomically,
 * never through a symlink) and give run_dir to the sandbox's host uid. Done by
 * at_bwrap_launch; exposed for tests. */
at_err_t at_bwrap_prepare_run_dir(const at_sandbox_spec_t *spec, char *errbuf, size_t errlen);

/* Launch the sandbox. Returns once the command is running: bwrap has reported
 * its child pid (--info-fd) and that child has exec'd the command, i.e. every
 * namespace, mount and bind is in place (or the command already ran and bwrap
 * exited 0). Bounded by AT_BWRAP_INFO_TIMEOUT_MS. Typically 10 ms here.
 *
 * On success out is filled; the caller is bwrap's parent and must reap
 * bwrap_pid (waitpid when pidfd turns readable, or from a SIGCHLD handler; not
 * SIG_IGN) when it exits. After a manager restart the sandbox is found again
 * through its cgroup (at_cgroup_pids) and init.sock. Stopping it is
 * at_cgroup_kill_all on the session's group.
 *
 * On failure nothing of the sandbox is left running (the session's group is
 * emptied with at_cgroup_kill_all and bwrap reaped); errbuf holds the end of
 * sandbox.log, i.e. bwrap's own message ("bwrap: Can't find source path /x: No
 * such file or directory"). */
at_err_t at_bwrap_launch(const at_sandbox_spec_t *spec, at_sandbox_proc_t *out, char *errbuf,
                         size_t errlen);

#endif
