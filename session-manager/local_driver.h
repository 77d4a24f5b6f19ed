/*
 * The `local` runtime driver (driver.h, ARCHITECTURE.md "Runtime drivers"):
 * every session is a bubblewrap sandbox on this host, atelier-init as its
 * PID 1, in the cgroup atelier/<session>, with its quota'd volume (a
 * loop-mounted ext4 image, sandbox/volume.h) at /workspace and /app.
 *
 * Host layout:
 *     <workspace_base>/<volume>                 the volume (mount point)
 *     <run_base>/<session>/                     root-owned, 0755: host-only bookkeeping
 *     <run_base>/<session>/volume               the session's volume name (root-owned)
 *     <run_base>/<session>/sandbox/             the sandbox's run dir, bound at
 *                                               /run/atelier (owned by the sandbox uid)
 *     <run_base>/<session>/sandbox/init.sock    atelier-init's socket (--socket mode)
 * The volume name lives outside the bound run dir so nothing inside the sandbox
 * can change which volume the manager later unmounts or destroys.
 *
 * list reports the sessions with a run dir under run_base (made before the
 * cgroup, removed last), so another deployment's sandboxes on the same host
 * are never reported. The host is the source of truth: whether a sandbox runs is "does the init at
 * init.sock answer a ping", its pid is SO_PEERCRED of that socket, its usage is
 * the cgroup's. A fresh driver (a restarted session-manager) therefore finds
 * every running sandbox: start on a running session re-attaches without
 * relaunching. The only in-memory state is, per sandbox this process
 * launched, bwrap's pid (we are its parent and must reap it), under a mutex.
 *
 * Init mode: atelier-init runs with --socket (it creates init.sock inside
 * the bound run dir). --listen-fd would need at_bwrap_launch to pass one more
 * descriptor into bwrap, which it does not do (it keeps fds 0..4 only).
 *
 * stop (sleep) unmounts the volume: that drops the volume's page cache and
 * inode cache (kernel memory the empty cgroup would otherwise keep charged)
 * and frees the loop device, so a thousand sleeping sessions hold no loop
 * devices; start mounts it again (a few ms). The cgroup is kept (empty, with
 * its limits); destroy removes it.
 *
 * Threads: every operation blocks (mkfs, mount, launch, init round trips) and
 * may run on any worker thread. Operations on different sessions run in
 * parallel; the caller runs one operation per session at a time (the
 * lifecycle's per-session job order), except exec and state, which may run
 * concurrently with each other (each uses its own short-lived init
 * connection; init serves at most 4 at once: the 5th gets AT_EBUSY -> -1).
 *
 * Reaping: bwrap is a child of the process that launched it. The driver reaps
 * it with waitpid(pid) in stop/destroy and opportunistically in start/state,
 * so the process must not set SIGCHLD to SIG_IGN; a process-wide
 * waitpid(-1) reaper elsewhere is harmless (ECHILD is ignored). A process that
 * is PR_SET_CHILD_SUBREAPER also gets the killed inits back and must reap them.
 *
 * exec: `/bin/bash -lc <command>` in /workspace through a pipe spawn; stdin is
 * written then closed; stdout/stderr are read until EOF (or, once the process
 * has exited, for at most 200 ms more: a background job keeping the pipe open
 * does not hold exec). output_max 0 means SM_LOCAL_OUTPUT_MAX_DEFAULT;
 * timeout_ms <= 0 means SM_LOCAL_EXEC_TIMEOUT_DEFAULT_MS. On timeout the whole
 * process group is SIGKILLed, timed_out = 1, exit_code = -1. A process killed
 * by a signal has exit_code -1 and signal set. res->out/err are malloc'd even
 * on failure paths that return -1 after spawning; free with
 * sm_local_exec_result_free.
 *
 * Terminals: spawn_pty, attach_pty and signal are init's spawn (pty), attach
 * and signal, each on a short-lived connection; the master comes back
 * O_NONBLOCK (init's own copy shares that flag and never reads it). A pid
 * init no longer knows is "gone" for attach_pty, with the status from init's
 * exit records when they still hold it. exits_open keeps a connection to
 * init for the caller's loop (one of the 4 init serves) and reads its exit
 * events without blocking.
 */
#ifndef SM_LOCAL_DRIVER_H
#define SM_LOCAL_DRIVER_H

#include <stdint.h>
#include <sys/types.h>

#include "bwrap.h"
#include "driver.h"

#define SM_LOCAL_HOST_ID_DEFAULT 65534 /* nobody/nogroup */
#define SM_LOCAL_PIDS_DEFAULT 512
#define SM_LOCAL_OUTPUT_MAX_DEFAULT (1u << 20)
#define SM_LOCAL_EXEC_TIMEOUT_DEFAULT_MS 30000
#define SM_LOCAL_STOP_GRACE_MS 2000 /* SIGTERM -> SIGKILL inside the sandbox on stop */
#define SM_LOCAL_START_TIMEOUT_MS 5000
#define SM_LOCAL_SPARES 4 /* formatted volume images kept ready (a burst of creates) */

typedef struct sm_local_config {
    const char *workspace_base;  /* WORKSPACE_BASE_PATH, absolute, existing */
    const char *run_base;        /* e.g. $ATELIER_DATA_DIR/run/sandboxes; created if missing */
    const char *init_path;       /* atelier-init on the host, reachable by host_uid */
    uid_t host_uid;              /* host ids uid 1000 inside maps to; 0 = 65534 */
    gid_t host_gid;              /* 0 = 65534 */
    at_sandbox_net_t net;        /* AT_SANDBOX_NET_NONE unless egress is configured */
    uint64_t default_disk_bytes; /* quota when spec->limits.disk_bytes is 0; 0 = 5 GiB */
    int spares;                  /* 1: a thread keeps SM_LOCAL_SPARES images of that size
                                  * formatted, so create need not run mkfs */
} sm_local_config_t;

/* A driver table for cfg (strings copied). NULL with a message in err
 * (SM_ERR_MAX bytes) on bad configuration. Free with sm_local_driver_free. */
sm_driver_t *sm_local_driver_new(const sm_local_config_t *cfg, char *err);
/* Frees the table and bookkeeping; running sandboxes keep running. */
void sm_local_driver_free(sm_driver_t *d);

/* Frees res->out/err and zeroes them. */
void sm_local_exec_result_free(sm_exec_result_t *res);

#endif
