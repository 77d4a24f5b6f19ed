/*
 * The session lifecycle (ARCHITECTURE.md, data paths 1 and 5): the
 * session-manager's job handlers on q:session. Each one reads the session's
 * row, runs the runtime driver's blocking call on an at_pool thread, then
 * records the outcome on the loop (code_sessions status, status_message,
 * replicas, limits, owner_instance, updated_at), publishes events on
 * ev:{session} and finishes the job.
 *
 *   start    {tier, cpu_millis, memory_mb, workspace_id, user_id}
 *            driver create + start -> 'loading_files', owner_instance = us,
 *            a `load` job on q:sync (the sync-worker answers with `loaded`)
 *   loaded   'loading_files' -> 'ready' (+ replicas 1), events status and
 *            pod_ready; stale (any other status): nothing
 *   sleep    any live status -> driver stop (the volume unmounted unless
 *            another running session of the workspace uses it) ->
 *            'sleeping', replicas 0, slept_at; {reason: "idle"} from the culler
 *   wake     sleeping|error -> driver start -> 'loading_files' -> load job;
 *            ready or loading_files: nothing to do (success)
 *   scale    {cpu_millis, memory_mb, tier}: ready|loading_files -> driver
 *            scale -> tier, cpu_millis, memory_mb recorded
 *   delete,  driver destroy; the volume goes with the workspace's last
 *   shutdown live session, else stays (mounted while another runs) ->
 *            'terminated', replicas 0
 *   exec     {command, timeout_s (30, max 600), stdin?}: ready only ->
 *            {exit_code, stdout, stderr, duration_ms, timed_out,
 *             stdout_truncated, stderr_truncated, oom_killed};
 *            last_activity, oom_kills and the disk figures recorded; an
 *            `oom` event when the kernel killed something at the limit
 *   recover  (from the monitor) the host's sandbox made to match the row:
 *            re-attached (with its open terminals), restarted
 *            (ATELIER_RESTART_LOST) or 'error'; a sleeping session's stray
 *            sandbox stopped
 *   terminal_open, terminal_close: terminals.h
 *
 * Terminals end with their sandbox: sleep, delete and shutdown hang up the
 * session's shells before the driver call, and the statement that records
 * the new status (sleeping, terminated, or a replaced or lost sandbox's
 * loading_files / error) closes their rows.
 *
 * A transition that makes no sense (scale a sleeping session, exec in one
 * that is not ready, anything on a terminated one) fails permanently with
 * a message naming the session and its status. A driver failure in start
 * or wake sets status 'error' with the driver's message.
 *
 * Volume name: ws_volume_name() of the workspace (shared/sql/003_runtime.sql),
 * read with the row: "<user_id>" for the user's default workspace (the
 * seed's {WORKSPACE_BASE_PATH}/{user_id}/), "<user_id>-<workspace_id>" for
 * any other.
 *
 * Ownership: each job first takes (or renews) the session's lease in the
 * same statement that reads the row (owner_instance, owner_lease_until).
 * A job whose session another live instance holds is put back on the
 * queue (at_job_defer, SM_DEFER_MS later) for that instance to take; an
 * expired lease (its holder died) is taken over.
 *
 * Ordering: jobs of one session never run at the same time on this
 * instance: a job that arrives while another of its session runs waits in
 * that session's in-memory FIFO (its stream entry stays pending and is
 * kept fresh by the worker runtime, so a crash loses nothing).
 *
 * Threads: everything here runs on the worker's loop thread except the
 * driver calls, which run on the pool. The module state is owned by the
 * loop thread (set up by sm_life_init, freed by sm_life_free).
 */
#ifndef SM_LIFECYCLE_H
#define SM_LIFECYCLE_H

#include <stddef.h>

#include "atelier/pool.h"
#include "atelier/worker.h"
#include "driver.h"

#define SM_EXEC_TIMEOUT_DEFAULT_S 30
#define SM_EXEC_TIMEOUT_MAX_S 600
#define SM_SANDBOX_UID 65534 /* host owner of volume files (uid 1000 inside) */
#define SM_DEFER_MS 20       /* a job of another instance's session goes back */

/* The handlers to register in at_worker_def_t (all durable). */
extern const at_handler_t sm_life_handlers[];
extern const size_t sm_life_handlers_count;

/* Wire the handlers to w, a driver and a pool (both borrowed: the caller
 * frees them after sm_life_free). Call from the worker's init hook. */
int sm_life_init(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool);
/* 1 while a job of the session runs or waits on this instance. */
int sm_life_busy(const char *uuid);
/* Shutdown, in this order: sm_life_close (no new driver work, no next
 * job of a session), at_pool_free (finishes what ran), free the driver,
 * sm_life_free (logs sessions whose jobs are still in flight: the worker
 * runtime leaves those for reclaim). */
void sm_life_close(void);
void sm_life_free(void);

#endif
