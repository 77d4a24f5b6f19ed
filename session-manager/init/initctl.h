/* initctl: the session-manager's client of atelier-init, the PID 1 of every sandbox.
 *
 * Protocol (session-manager/init/init_wire.h): an AF_UNIX SOCK_SEQPACKET socket, one JSON
 * object per message (at most 64 KiB), descriptors attached with SCM_RIGHTS. Requests
 * carry an "id" that the reply echoes: {"id","ok":true,...} or {"id","ok":false,"error",
 * "errno"?}. Between replies init pushes events: {"event":"exit","pid","code","signal",
 * "ended_ms","seq"} when a spawned child is reaped ("code" is 128 + signal when it was
 * killed, "seq" numbers exits in reaping order). Requests:
 *
 *   ping                          -> pid (1), uptime_ms, children, version
 *   spawn argv env? cwd? pty? cols? rows?
 *                                 -> pid, pty, fds: ["pty"] | ["stdin","stdout","stderr"]
 *   attach pid                    -> the same descriptors again (after a manager restart)
 *   close_stdin pid               -> init closes its copy of a pipe child's stdin
 *   signal pid sig group?         -> kill(pid) or kill(-pgid of pid)
 *   list                          -> procs: [{pid, argv0, pty, started_ms}]
 *   exits ack?                    -> exits: [{seq, pid, code, signal, ended_ms}] with
 *                                    seq > ack (at most 256: "more" says there are others),
 *                                    dropped, last_seq
 *   shutdown grace_ms?            -> SIGTERM to all, SIGKILL after grace; init then exits
 *
 * Ownership of descriptors. init keeps its own copy of every descriptor it hands out
 * while the child lives (so the child gets no SIGHUP/EOF/SIGPIPE when the manager dies,
 * and nothing it writes is lost) and closes its copies when the child is reaped. The
 * copies share one open file description: O_NONBLOCK set by the manager applies to both,
 * which is harmless (init never reads or writes them). Because init holds the write end
 * of a pipe child's stdin, the child sees end of file only after close_stdin AND the
 * manager closing its own copy. Window size: ioctl(master, TIOCSWINSZ) on the manager's
 * copy of a PTY master. Exit records wait in init (a ring of 1024) until acknowledged with
 * "exits" ack=seq, so a manager that dies between reading and recording them reads them
 * again.
 *
 * Threads: a handle is used by one thread at a time. init serves up to 4 connections, so
 * a manager may keep one per sandbox on its event loop (poll at_initctl_fd() for
 * readable, then at_initctl_read_event() with timeout 0) and open short-lived ones from
 * worker threads for blocking work. Every call blocks at most timeout_ms (< 0: no limit).
 *
 * Errors: every function returns at_err_t, with a message naming what failed in err
 * (errlen bytes, may be NULL): AT_ETIMEOUT (deadline passed), AT_ECLOSED (init closed the
 * connection or has exited), AT_EIO (a system call failed), AT_EBUSY (init refused the
 * connection: too many clients), AT_EINVAL (init answered ok:false; AT_ENOTFOUND when its
 * errno was ENOENT or ESRCH: no such program, no such process), AT_ETOOBIG (request over
 * 64 KiB). */
#ifndef ATELIER_INITCTL_H
#define ATELIER_INITCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "atelier/err.h"

#define AT_INITCTL_MAX_FDS 3
/* Events read while waiting for a reply wait in the handle, up to this many (older ones
 * are dropped: exit records can be read again with at_initctl_exits). */
#define AT_INITCTL_MAX_QUEUED_EVENTS 1024

typedef struct at_initctl at_initctl_t;

/* Connects to the init listening at path, retrying while the socket does not exist yet
 * or refuses (init still starting), until timeout_ms. Waits for init's "hello"; a
 * refusal (peer inside the sandbox, too many clients) is an error. *out is owned by the
 * caller: at_initctl_close(). */
at_err_t at_initctl_connect(const char *path, int timeout_ms, at_initctl_t **out, char *err,
                            size_t errlen);
/* The same over an already connected socket (e.g. one end of a socketpair handed to
 * init); takes ownership of fd, even on failure. */
at_err_t at_initctl_adopt(int fd, int timeout_ms, at_initctl_t **out, char *err, size_t errlen);
void at_initctl_close(at_initctl_t *c);

/* The socket, for an event loop: readable means an event (or EOF) is waiting. */
int at_initctl_fd(const at_initctl_t *c);
/* The pid SO_PEERCRED reports for the listening end, as the caller's pid namespace sees
 * it: the process that called listen(). With --socket that is init itself (on the host,
 * the sandbox's PID 1: to check against bwrap's child or to SIGKILL it); with --listen-fd
 * it is whoever created the socket (the manager), so it tells nothing about init. */
pid_t at_initctl_peer_pid(const at_initctl_t *c);

/* Sends req (borrowed; a copy gets a fresh "id") and waits for its reply. Events read
 * meanwhile are queued for at_initctl_read_event. On a reply, *reply (owned by the
 * caller) is set even when it says ok:false (then the error is in err and the return
 * value is AT_EINVAL or AT_ENOTFOUND). Descriptors attached to an ok:true reply are
 * stored in fds (room for AT_INITCTL_MAX_FDS, O_CLOEXEC, owned by the caller) and
 * counted in *nfds; with fds NULL they are closed. reply and nfds may be NULL. */
at_err_t at_initctl_request(at_initctl_t *c, const json_t *req, json_t **reply, int *fds, int *nfds,
                            int timeout_ms, char *err, size_t errlen);

/* The next event: a queued one first, else one read from the socket within timeout_ms
 * (0: only what is already there; AT_ETIMEOUT when there is none). *event is owned by
 * the caller. */
at_err_t at_initctl_read_event(at_initctl_t *c, json_t **event, int timeout_ms, char *err,
                               size_t errlen);

/* ---- typed helpers ------------------------------------------------------------------ */

typedef struct {
    uint64_t seq;
    pid_t pid;
    int code;   /* exit status, 128 + signal when killed */
    int signal; /* 0 unless killed by a signal */
    int64_t ended_ms;
} at_initctl_exit_t;

/* Reads an "exit" event (or an element of an "exits" reply); AT_EINVAL for anything
 * else. */
at_err_t at_initctl_exit_from_json(const json_t *j, at_initctl_exit_t *out);

typedef struct {
    int64_t uptime_ms;
    int children; /* live spawned children */
    pid_t pid;    /* init's own pid in the sandbox: 1 */
} at_initctl_ping_t;

at_err_t at_initctl_ping(at_initctl_t *c, at_initctl_ping_t *out, int timeout_ms, char *err,
                         size_t errlen);

typedef struct {
    const char *const *argv;   /* NULL-terminated, argv[0] looked up in the child's PATH */
    const char *const *env;    /* NULL-terminated "K=V" list, or NULL to inherit init's */
    const char *cwd;           /* NULL: init's --workdir */
    bool pty;                  /* a PTY (TERM defaults to xterm-256color) or three pipes */
    unsigned short cols, rows; /* PTY size; 0 means 80x24 */
} at_initctl_spawn_t;

/* The descriptors of a spawned child. pty: fds[0] is the master, the others -1. pipes:
 * fds[0] stdin (write end; -1 after close_stdin), fds[1] stdout, fds[2] stderr (read
 * ends). Owned by the caller. */
typedef struct {
    pid_t pid;
    bool pty;
    int fds[AT_INITCTL_MAX_FDS];
} at_initctl_proc_fds_t;

/* Starts a process in the sandbox (in its own session and process group; on a PTY it is
 * the controlling terminal). An exec failure comes back as AT_ENOTFOUND/AT_EINVAL with
 * "exec NAME: No such file or directory" in err. */
at_err_t at_initctl_spawn(at_initctl_t *c, const at_initctl_spawn_t *spec,
                          at_initctl_proc_fds_t *out, int timeout_ms, char *err, size_t errlen);
/* The descriptors of a live spawned child again (after a restart). */
at_err_t at_initctl_attach(at_initctl_t *c, pid_t pid, at_initctl_proc_fds_t *out, int timeout_ms,
                           char *err, size_t errlen);
at_err_t at_initctl_close_stdin(at_initctl_t *c, pid_t pid, int timeout_ms, char *err,
                                size_t errlen);
/* kill(pid, sig), or with group the whole process group of pid. */
at_err_t at_initctl_signal(at_initctl_t *c, pid_t pid, int sig, bool group, int timeout_ms,
                           char *err, size_t errlen);

typedef struct {
    pid_t pid;
    char argv0[64];
    bool pty;
    int64_t started_ms;
} at_initctl_procinfo_t;

/* Live spawned children; *out is malloc'ed (free() it), *n its length. */
at_err_t at_initctl_list(at_initctl_t *c, at_initctl_procinfo_t **out, size_t *n, int timeout_ms,
                         char *err, size_t errlen);

/* Exit records with seq > ack, after dropping those <= ack in init. *out is malloc'ed
 * (free() it); *more says there are records beyond this batch; *dropped (may be NULL)
 * counts records init overwrote before anyone acknowledged them. */
at_err_t at_initctl_exits(at_initctl_t *c, uint64_t ack, at_initctl_exit_t **out, size_t *n,
                          bool *more, uint64_t *dropped, int timeout_ms, char *err, size_t errlen);

/* SIGTERM to every process of the sandbox, SIGKILL after grace_ms, then init exits (and
 * with it the sandbox). timeout_ms should leave room for grace_ms. */
at_err_t at_initctl_shutdown(at_initctl_t *c, int grace_ms, int timeout_ms, char *err,
                             size_t errlen);

#endif
