/*
 * Terminals (issue 6, ARCHITECTURE.md data path 2): `/bin/bash -l` on a
 * PTY inside a session's sandbox, its bytes carried by Redis streams so
 * that any gateway can serve any client. The gateway records a terminal
 * (row in `terminals`, status 'opening') and queues `terminal_open`; this
 * module, on the session-manager that holds the session's lease, runs it.
 *
 * Jobs (in the session's FIFO, lifecycle.h):
 *   terminal_open  {terminal_id, cols?, rows?}: ready sessions only; the
 *                  shell spawned through the sandbox's init (cwd /workspace,
 *                  TERM=xterm-256color, HISTFILE=/workspace/.bash_history)
 *                  -> row 'open' with pid, cols, rows -> {terminal_id, pid}.
 *                  A row already 'open' (a redelivered job) is re-attached.
 *   terminal_close {terminal_id}: SIGHUP to the shell's process group,
 *                  SIGKILL after SM_TERM_HANGUP_MS if it is still there ->
 *                  row 'closed'; idempotent.
 *
 * Streams (the gateway <-> manager contract):
 *   term:{id}:in   read with one blocking XREAD for all terminals of this
 *                  process (its own Redis connection; CLIENT UNBLOCK when
 *                  the set changes). t=in d=bytes -> the PTY (non-blocking;
 *                  up to SM_TERM_INPUT_MAX bytes wait per terminal, more is
 *                  dropped with a warning); t=resize cols rows -> TIOCSWINSZ
 *                  and the row; t=signal sig (HUP INT QUIT KILL TERM CONT
 *                  STOP TSTP) -> the foreground process group (TIOCGPGRP
 *                  on the master, signalled from the host: it works even
 *                  when the program does not read its input). Entries taken
 *                  are trimmed (XTRIM MINID), so after a restart the stream
 *                  holds exactly what was not taken.
 *   term:{id}:out  XADD MAXLEN ~ ATELIER_TERM_REPLAY_ENTRIES with the ID
 *                  0-<seq> (seq 1, 2, ...; after a restart it continues from
 *                  the stream's last entry): t out d <at most SM_TERM_CHUNK
 *                  bytes read until EAGAIN>, or t exit code N last; each
 *                  with PUBLISH term:{id} "<seq>\n<bytes>" ("<seq> exit N":
 *                  a space, so no output reads as an exit)
 *                  in the same pipeline. While SM_TERM_UNSENT_MAX bytes are
 *                  unanswered the master is not read: a flood is slowed by
 *                  the PTY itself, nothing here grows. An ended terminal's
 *                  output stream expires after SM_TERM_STREAM_TTL_S.
 *
 * Ends: the shell exits (init's exit event, or end of file on the master
 * and no event within SM_TERM_EXIT_WAIT_MS) -> row 'exited' with
 * exit_code, the exit entry. terminal_close and the session's end (sleep,
 * delete, shutdown, a replaced sandbox: sm_term_session_end) -> row
 * 'closed'. Every end writes the exit entry (code 128 + signal for a
 * killed shell; 129, a hangup, for one whose status never came). A
 * restarted manager keeps nothing: sm_term_attach re-attaches
 * a session's open rows through init's `attach`; a row whose process is
 * gone becomes 'exited'.
 *
 * Threads: the loop thread, except the driver calls (spawn_pty,
 * attach_pty, signal, exits_open), which run on the pool. State is owned
 * by the loop thread between sm_term_init and sm_term_free.
 */
#ifndef SM_TERMINALS_H
#define SM_TERMINALS_H

#include <jansson.h>

#include "atelier/pool.h"
#include "atelier/worker.h"
#include "driver.h"

#define SM_TERM_CHUNK (16 * 1024) /* output bytes per stream entry */
/* output in Redis commands not answered, per terminal: 64 KiB kept 3 entries
 * in flight (43 MB/s for a cat); 256 KiB, 52-66 MB/s; more gained nothing */
#define SM_TERM_UNSENT_MAX (256 * 1024)
#define SM_TERM_INPUT_MAX (64 * 1024) /* input waiting for the PTY, per terminal */
#define SM_TERM_HANGUP_MS 1000        /* terminal_close: SIGHUP, SIGKILL after this */
#define SM_TERM_EXIT_WAIT_MS 1000     /* end of file on the master: wait for the exit status */
#define SM_TERM_DRAIN_MS 200          /* the shell exited: its output still read this long */
#define SM_TERM_STREAM_TTL_S 3600     /* an ended terminal's output, kept for replay */

/* The end of a terminal job: result (stolen) on success, else err (and
 * whether retrying could help). Called exactly once, on the loop. */
typedef void sm_term_done_fn(void *arg, json_t *result, const char *err, int permanent);

/* Connections and state; call from the worker's init hook, after the pool. */
int sm_term_init(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool);
/* terminal_open or terminal_close of a session this instance holds, whose
 * row says status (lifecycle.c, in the session's FIFO). */
void sm_term_job(const char *kind, const char *session, const char *status, json_t *args,
                 sm_term_done_fn *done, void *arg);
/* The session's sandbox runs here (recover): re-attach its open terminals.
 * result: {attached, exited, failed}. */
void sm_term_attach(const char *session, sm_term_done_fn *done, void *arg);
/* The session's sandbox stops or is replaced: hang up its shells, write
 * their exit entries, stop pumping. The caller's statement closes the rows. */
void sm_term_session_end(const char *session);
/* Shutdown: sm_term_close (no new pool work), at_pool_free, sm_term_free
 * (stops pumping; the shells keep running in their sandboxes, the rows stay
 * open for the next instance), then free the driver. */
void sm_term_close(void);
void sm_term_free(void);

#endif
