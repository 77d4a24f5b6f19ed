/*
 * Terminals on a WebSocket connection, between ws_terms.c (the relay:
 * output from term:{id}:out to the client, replay and live merged without
 * duplicates or gaps) and ws_term_cmds.c (what clients ask: open, attach,
 * input, resize, close).
 */
#ifndef GATEWAY_WS_TERMS_H
#define GATEWAY_WS_TERMS_H

#include <stdint.h>

#include "ws_internal.h"
#include "ws_policy.h"

#define WS_TERM_SIZE_MAX 1000 /* cols and rows, as the terminals table allows */

typedef struct ws_seg ws_seg_t;
typedef struct ws_live ws_live_t;

typedef enum {
    A_SYNC = 0, /* reading the stream (replay, or catching up after a gap) */
    A_LIVE,     /* taking the published messages in order */
} attach_state_t;

/* One terminal driven by one connection. */
struct ws_attach {
    ws_attach_t *next;  /* the connection's terminals */
    ws_attach_t *tnext; /* the terminal's connections on this gateway */
    ws_conn_t *conn;
    char terminal[AT_UUID_LEN + 1];
    char session[AT_UUID_LEN + 1];
    int binary;  /* output as binary frames of raw bytes */
    int is_auto; /* opened on demand for a client that names only the session */
    int refs;    /* 1 while attached + 1 per stream read on its way */
    int detached;
    attach_state_t state;
    int64_t last;     /* the last stream entry taken (sent, queued or held back) */
    int primed;       /* entry `last` was read again for its unfinished UTF-8 */
    int reading;      /* an XRANGE is on its way */
    int page;         /* the entries it asked for */
    int waiting_room; /* the next replay page waits for the send queue */
    int reread;       /* live messages were dropped during a read: read again */
    int exited;       /* the exit entry is queued: detach once it is sent */
    ws_live_t *live_head, *live_tail;
    size_t live_bytes;
    ws_seg_t *seg_head, *seg_tail;
    unsigned char carry[4];
    int ncarry;
    policy_line_t line;
};

/* A terminal the connection follows from entry last on (0: from the
 * start of what is kept). */
ws_attach_t *ws_attach_new(ws_conn_t *c, const char *terminal, const char *session, int binary,
                           int64_t last, int is_auto);
void ws_attach_detach(ws_attach_t *at);
ws_attach_t *ws_attach_find(const ws_conn_t *c, const char *terminal);
/* The terminal opened on demand for session, if any. */
ws_attach_t *ws_attach_auto(const ws_conn_t *c, const char *session);
/* ws_term_frames.c: what waits to be sent for one terminal. Output bytes of
 * entry seq (made valid UTF-8 unless binary); the exit entry; a JSON message
 * (stolen) kept in order with the output; all of it dropped. */
void ws_seg_output(ws_attach_t *at, int64_t seq, const char *d, size_t n);
void ws_seg_exit(ws_attach_t *at, int64_t seq, int code);
void ws_attach_message(ws_attach_t *at, json_t *msg);
void ws_segs_drop(ws_attach_t *at);

/* ws_term_cmds.c, for ws_term_open.c: a client's terminal or session id,
 * lower-cased (0 when malformed); an optional integer field in [lo, hi]
 * (def when absent, -1 when bad); the connection's scope as text; input
 * through the policy to term:{id}:in; job terminal_close for a terminal of
 * c's scope (quiet: no answer to the client). */
int ws_arg_id(json_t *msg, const char *field, char out[AT_UUID_LEN + 1], int session);
long long ws_arg_int(json_t *msg, const char *field, long long def, long long lo, long long hi);
void ws_scope_text(const ws_conn_t *c, char out[24]);
void ws_term_send_input(ws_attach_t *at, const char *data, size_t n);
void ws_term_close_id(ws_conn_t *c, const char *terminal, const char *id, int quiet);

/* ws_term_open.c: input for the terminal of session opened on demand (held
 * while it opens, or it is opened now); keep typed input, bounded by
 * WS_PENDING_INPUT_MAX (-1 when over). */
void ws_term_auto_input(ws_conn_t *c, const char *session, const char *data, size_t n,
                        const char *id);
int ws_hold_input(char **buf, size_t *len, const char *data, size_t n);

#endif
