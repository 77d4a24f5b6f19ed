/*
 * Terminals' internals, shared by the three files of the module (not an API:
 * the rest of the session-manager uses terminals.h):
 *   terminals.c        the registry, the output pump (term:{id}:out), the ends
 *   terminals_input.c  term:{id}:in -> the PTY (one blocking XREAD)
 *   terminals_jobs.c   terminal_open, terminal_close, re-attach
 * Loop thread only.
 */
#ifndef SM_TERMINALS_INT_H
#define SM_TERMINALS_INT_H

#include <stdint.h>
#include <sys/types.h>

#include "atelier/io.h"
#include "atelier/job.h"
#include "atelier/redis.h"
#include "atelier/util.h"
#include "terminals.h"

#define TERM_BUCKETS 1024
#define SESS_BUCKETS 256
#define KEY_MAX 64          /* "term:<uuid>:out" */
#define ENTRY_ID_MAX 48     /* a stream entry id "<ms>-<seq>" */
#define SIZE_MAX_CELLS 1000 /* cols and rows (the table's CHECK) */

typedef struct tsess tsess_t;
typedef struct term term_t;

/* A terminal this process pumps: in the registry (by id) and in its
 * session's list until it ends; freed when its last Redis callback ran. */
struct term {
    char id[AT_UUID_LEN + 1];
    char out_key[KEY_MAX], in_key[KEY_MAX], channel[KEY_MAX];
    tsess_t *s;
    term_t *next;  /* in its session */
    term_t *hnext; /* registry chain */
    pid_t pid;     /* the shell, as the sandbox numbers it */
    int master;    /* -1 once closed */
    at_io_watch_t *io;
    int watching; /* events io is set to */
    at_io_timer_t *timer;
    uint64_t seq;     /* of the last output entry written or found */
    int synced;       /* seq is known */
    int syncing;      /* XREVRANGE in flight */
    int last_is_exit; /* the stream's last entry (at sync) was an exit */
    size_t unsent;    /* output bytes in unanswered Redis commands */
    int refs;         /* 1 while registered + Redis callbacks due */
    char *inbuf;      /* input waiting for the PTY (SM_TERM_INPUT_MAX) */
    size_t inlen;
    size_t dropped_in;
    char in_last[ENTRY_ID_MAX]; /* last input entry taken */
    int eof;                    /* the master said end of file / EIO */
    int exited, code;           /* the shell's exit status, when known */
    int closing;                /* the row says (or will say) closed */
    int ended;                  /* deregistered; the exit entry is due or written */
    int exit_due;               /* the exit entry waits for the sync */
};

/* A session with terminals here (or work for them in flight). */
struct tsess {
    char uuid[AT_JOB_SESSION_MAX + 1];
    tsess_t *hnext;
    term_t *terms;
    int nterms;
    int busy; /* pool work in flight for it */
    sm_exits_t *exits;
    at_io_watch_t *exits_io;
    int64_t activity_ms;
};

/* The module's state (terminals.c), owned by the loop thread. */
typedef struct sm_terms {
    at_worker_t *w;
    sm_driver_t *driver;
    at_pool_t *pool;
    at_redis_t *out; /* output, trims, CLIENT UNBLOCK */
    int closing;     /* sm_term_close ran: no new pool work, no new commands */
    char maxlen[24]; /* ATELIER_TERM_REPLAY_ENTRIES */
    term_t *terms[TERM_BUCKETS];
    size_t nterms;
    tsess_t *sessions[SESS_BUCKETS];
} sm_terms_t;

extern sm_terms_t sm_terms;

static inline const at_config_t *sm_term_cfg(void)
{
    return at_worker_config(sm_terms.w);
}

/* terminals.c: the registry and the life of a terminal. */
term_t *sm_term_find(const char *id);
tsess_t *sm_term_sess_find(const char *uuid);
tsess_t *sm_term_sess_get(const char *uuid); /* made when missing; NULL: out of memory */
/* Frees a session with no terminal and no work in flight (busy). */
void sm_term_sess_release(tsess_t *s);
/* A live terminal (takes pty->master): pumping starts when its seq is known. */
term_t *sm_term_add(tsess_t *s, const char *id, const sm_pty_t *pty);
/* A terminal whose process is gone: its row and exit entry. */
void sm_term_gone(tsess_t *s, const char *id, pid_t pid, int code);
/* The terminal is over (code -1: unknown); it may be freed on return. */
void sm_term_end(term_t *t, int code);
/* The value of name in a stream entry's fields, NULL when absent. */
const redisReply *sm_term_field(const redisReply *fields, const char *name);
/* The master's watcher set to what the terminal can do now. */
void sm_term_watch_update(term_t *t);
/* The session's exit events (one stream per session; a second is closed). */
void sm_term_exits_install(tsess_t *s, sm_exits_t *x);

/* terminals_input.c */
int sm_term_input_start(void);
void sm_term_input_stop(void);
/* The set of terminals changed: the blocking XREAD is issued again. */
void sm_term_inputs_changed(void);
/* Writes what waits in t->inbuf (the master became writable). */
void sm_term_flush_input(term_t *t);

#endif
