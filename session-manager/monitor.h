/*
 * The session-manager's periodic duties, beside the jobs (lifecycle.h):
 *
 * Leases, every ATELIER_LEASE_TTL_MS / 3: renew this instance's lease on
 * its sessions; adopt the sessions of instances whose lease expired (they
 * died) and queue a `recover` job for each, which re-attaches to (or
 * restarts) its sandbox.
 *
 * A look, at start and every ATELIER_CULL_INTERVAL_MS, over this
 * instance's live sessions (the driver calls on the pool):
 *   usage      cgroup memory, CPU time, OOM kills and the volume's disk
 *              figures onto the row (the API's status and its 507 check);
 *              an `oom` event when the kernel killed something
 *   activity   CPU use above ATELIER_IDLE_CPU_MILLIS since the previous
 *              look is activity (kind `cpu`): a long background job keeps
 *              its session awake, an idle shell does not
 *   mismatch   a ready or loading session whose sandbox is gone, or a
 *              sleeping one whose sandbox runs -> a `recover` job
 *   timeouts   loading_files longer than ATELIER_LOAD_TIMEOUT_S -> error
 *   culling    idle longer than ATELIER_IDLE_SLEEP_S -> `sleep` {reason:
 *              idle}; asleep longer than ATELIER_SLEEP_DELETE_S, idle
 *              longer than ATELIER_IDLE_DELETE_S or older than
 *              ATELIER_MAX_LIFETIME_S -> terminating + `delete`; each with
 *              an audit_log row (action session.cull, actor the instance)
 *   orphans    sandboxes and cgroups of this deployment (its run dir) with
 *              no live session record are destroyed; volumes mounted for
 *              a workspace with no live session are unmounted (the files
 *              are in the database)
 *
 * At start: a `recover` for each of this instance's ready sessions with
 * open terminals (terminals.h), which re-attaches them.
 *
 * Jobs are queued only for sessions with no job running or waiting here
 * (sm_life_busy), so a slow job is not queued twice.
 *
 * Threads: loop thread, except the driver calls. State owned by the loop
 * thread between sm_monitor_start and sm_monitor_stop.
 */
#ifndef SM_MONITOR_H
#define SM_MONITOR_H

#include "atelier/pool.h"
#include "atelier/worker.h"
#include "driver.h"

/* Timers on; the first lease pass and look run at once. */
int sm_monitor_start(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool);
/* Timers off; a look whose driver calls are on the pool ends when the pool
 * is freed (its done callback sees the monitor stopped). */
void sm_monitor_stop(void);

#endif
