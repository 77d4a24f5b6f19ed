/*
 * Runtime drivers (ARCHITECTURE.md, "Runtime drivers"): what the
 * session-manager asks of a place that runs sandboxes. `local` (bubblewrap +
 * cgroups + loop-mounted volumes on this host, local_driver.c) is the
 * embedded default; `kubernetes` comes later behind the same table.
 *
 * Every operation may block (mkfs, mount, process launch, talking to a
 * sandbox's init): the lifecycle code calls them on at_pool threads, never
 * on the loop. They are idempotent, keyed by the session uuid, so a job that
 * is redelivered after a crash can run them again: create on an existing
 * volume, start on a running sandbox, stop on a stopped one and destroy on a
 * missing one all succeed. Errors return -1 with a message in err.
 */
#ifndef SM_DRIVER_H
#define SM_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SM_ERR_MAX 512

typedef struct sm_limits {
    int cpu_millis;     /* 1000 = one CPU */
    int memory_mb;      /* swap off */
    int pids_max;       /* fork bombs stop here */
    int64_t disk_bytes; /* volume quota */
} sm_limits_t;

typedef struct sm_spec {
    const char *session;      /* uuid */
    const char *workspace_id; /* uuid */
    int64_t user_id;
    const char *volume; /* volume name, e.g. "<user_id>" for the default workspace */
    sm_limits_t limits;
} sm_spec_t;

typedef struct sm_state {
    int running;          /* sandbox up and its init answering */
    pid_t pid;            /* host pid of the sandbox's PID 1 (0 when stopped) */
    char root[4096];      /* the mounted volume on the host */
    int64_t memory_bytes; /* cgroup usage */
    int64_t cpu_usage_ns; /* cgroup CPU time, for idle detection */
    int pids;
    int oom_kills;           /* processes killed at the memory limit, since create */
    int64_t disk_used_bytes; /* the volume, when mounted (else both 0) */
    int64_t disk_total_bytes;
} sm_state_t;

/* What destroy does with the session's volume. Several sessions may use one
 * workspace's volume at once: the last one running unmounts it. */
typedef enum {
    SM_VOLUME_KEEP_MOUNTED = 0, /* another running session still uses it */
    SM_VOLUME_UNMOUNT = 1,      /* kept for a later session (sleeping ones, files) */
    SM_VOLUME_REMOVE = 2,       /* the workspace's volume goes (shutdown, last session) */
} sm_volume_action_t;

typedef struct sm_exec {
    const char *command; /* run by bash -lc in /workspace */
    const char *stdin_data;
    size_t stdin_len;
    int timeout_ms;
    size_t output_max; /* per stream; the rest is dropped and marked */
} sm_exec_t;

typedef struct sm_exec_result {
    int exit_code; /* -1 when killed */
    int signal;
    int timed_out;
    char *out, *err; /* malloc'd, NUL-terminated */
    size_t out_len, err_len;
    int out_truncated, err_truncated;
    int64_t duration_ms;
} sm_exec_result_t;

typedef void sm_list_fn(const char *session, void *arg);

/* A process on a new pseudo-terminal in the sandbox: a terminal's shell
 * (terminals.h). */
typedef struct sm_pty_spec {
    const char *const *argv; /* NULL-terminated */
    const char *const *env;  /* its whole environment, NULL-terminated "K=V" */
    const char *cwd;
    int cols, rows;
} sm_pty_spec_t;

typedef struct sm_pty {
    pid_t pid;  /* as the sandbox numbers it (its init's view) */
    int master; /* the PTY master, O_NONBLOCK | O_CLOEXEC, owned by the caller */
} sm_pty_t;

/* A session's stream of exit events: processes started by spawn_pty (and
 * exec) as they end, without polling. Opaque; one connection to the
 * sandbox, read on the caller's loop. */
typedef struct sm_exits sm_exits_t;

typedef struct sm_driver {
    const char *name;
    void *self;
    /* volume (+ quota) and cgroup with the spec's limits; no processes */
    int (*create)(void *self, const sm_spec_t *spec, sm_state_t *out, char *err);
    /* the sandbox running with its init answering (after create or stop) */
    int (*start)(void *self, const sm_spec_t *spec, sm_state_t *out, char *err);
    /* every process gone, memory freed; volume and records kept (sleep);
     * unmount: no other running session uses the volume */
    int (*stop)(void *self, const char *session, int unmount, char *err);
    /* new limits on the running cgroup, no restart */
    int (*scale)(void *self, const char *session, const sm_limits_t *limits, char *err);
    int (*exec)(void *self, const char *session, const sm_exec_t *req, sm_exec_result_t *res,
                char *err);
    /* sandbox and cgroup gone; the volume as `action` says (volume NULL:
     * the one the session was created with) */
    int (*destroy)(void *self, const char *session, const char *volume, sm_volume_action_t action,
                   char *err);
    /* current state (running, usage) */
    int (*state)(void *self, const char *session, sm_state_t *out, char *err);
    /* every session this host has something of (sandbox, cgroup, mount):
     * orphan cleanup compares it with the records */
    int (*list)(void *self, sm_list_fn *fn, void *arg, char *err);
    /* every volume mounted on this host, by name, and unmounting one that
     * no running session uses (the monitor's orphan pass) */
    int (*volumes)(void *self, sm_list_fn *fn, void *arg, char *err);
    int (*unmount)(void *self, const char *volume, char *err);
    /* terminals: a process on a new PTY in the running sandbox */
    int (*spawn_pty)(void *self, const char *session, const sm_pty_spec_t *spec, sm_pty_t *out,
                     char *err);
    /* the PTY master of a live PTY process again (after a restart): 0; 1
     * when the process is gone, with its exit status in *code (-1 unknown) */
    int (*attach_pty)(void *self, const char *session, pid_t pid, sm_pty_t *out, int *code,
                      char *err);
    /* kill(pid, sig) in the sandbox (group: its whole process group; sig 0:
     * is it alive): 0; 1 when there is no such process */
    int (*signal)(void *self, const char *session, pid_t pid, int sig, int group, char *err);
    /* the session's exit events: open (blocks: on the pool), the descriptor
     * to watch on the loop (readable: events may wait), the next one without
     * blocking (1: *pid and *code set, code 128 + signal when killed; 0:
     * none waiting; -1: the stream ended, e.g. the sandbox stopped), close */
    int (*exits_open)(void *self, const char *session, sm_exits_t **out, char *err);
    int (*exits_fd)(const sm_exits_t *x);
    int (*exits_next)(sm_exits_t *x, pid_t *pid, int *code);
    void (*exits_close)(sm_exits_t *x);
} sm_driver_t;

#endif
