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
 *   sleep    ready|error -> driver stop -> 'sleeping', replicas 0
 *   wake     sleeping|error -> driver start -> 'loading_files' -> load job;
 *            ready or loading_files: nothing to do (success)
 *   scale    {cpu_millis, memory_mb, tier}: ready|loading_files -> driver
 *            scale -> tier, cpu_millis, memory_mb recorded
 *   delete   driver destroy; the volume is kept only while another live
 *            session uses the same workspace -> 'terminated', replicas 0
 *   shutdown driver destroy, volume removed -> 'terminated'
 *   exec     {command, timeout_s (30, max 600), stdin?}: ready only ->
 *            {exit_code, stdout, stderr, duration_ms, timed_out,
 *             stdout_truncated, stderr_truncated}; last_activity touched
 *
 * A transition that makes no sense (scale a sleeping session, exec in one
 * that is not ready, anything on a terminated one) fails permanently with
 * a message naming the session and its status. A driver failure in start
 * or wake sets status 'error' with the driver's message.
 *
 * Volume name: "<user_id>/<workspace_id>" (two segments, always a valid
 * volume name, stable across renames of the workspace, no lookup needed).
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
#define SM_EXEC_OUTPUT_MAX (1u << 20) /* per stream */
#define SM_SANDBOX_UID 65534          /* host owner of volume files (uid 1000 inside) */

/* The handlers to register in at_worker_def_t (all durable). */
extern const at_handler_t sm_life_handlers[];
extern const size_t sm_life_handlers_count;

/* Wire the handlers to w, a driver and a pool (both borrowed: the caller
 * frees them after sm_life_free). Call from the worker's init hook. */
int sm_life_init(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool);
/* Shutdown, in this order: sm_life_close (no new driver work, no next
 * job of a session), at_pool_free (finishes what ran), free the driver,
 * sm_life_free (logs sessions whose jobs are still in flight: the worker
 * runtime leaves those for reclaim). */
void sm_life_close(void);
void sm_life_free(void);

#endif
