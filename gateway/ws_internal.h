/*
 * What the WebSocket files share (ws.h is the rest of the gateway's view):
 *
 *   ws.c         the lws protocol: connections, receive, the send queue,
 *                close codes, client message dispatch
 *   ws_auth.c    credentials at the upgrade, tickets, connections per user
 *   ws_terms.c   terminals: open, attach with replay, input, output relay
 *   ws_events.c  session events (ev:{session}): subscribe, pod_ready
 *   ws_pubsub.c  the WebSocket side's Redis links: pub/sub (channels by
 *                reference) and terminal input, written before the loop sleeps
 *   ws_text.c    UTF-8 repair and JSON escaping of terminal bytes
 *   ws_policy.c  the command policy (also used by exec)
 *
 * Everything runs on the loop; a connection that closes while a database
 * or Redis answer is on its way is kept (refs) until that answer comes.
 */
#ifndef GATEWAY_WS_INTERNAL_H
#define GATEWAY_WS_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "atelier/util.h"
#include "gateway.h"

#define WS_SUBPROTOCOL "atelier.v1"          /* the named subprotocol, for clients that want one */
#define WS_SEG_MAX 65536                     /* terminal bytes in one output frame */
#define WS_FRAME_MAX (6 * WS_SEG_MAX + 1024) /* the largest frame once JSON-escaped */
#define WS_MAX_ATTACH 64                     /* terminals one connection drives */
#define WS_MAX_WATCH 64                      /* sessions one connection watches */
#define WS_AUTO_WATCH 16                /* sessions watched at connect (the newest live ones) */
#define WS_EARLY_MAX 8                  /* messages held while credentials are checked */
#define WS_PENDING_INPUT_MAX 65536      /* input typed while a terminal opens on demand */
#define WS_LIVE_BUF_MAX (256 * 1024)    /* live output held while a replay reads the stream */
#define WS_CLOSE_GRACE_S 5              /* a closing connection's last messages, at most */
#define WS_BIN_HEADER (AT_UUID_LEN + 8) /* binary output: terminal id, seq (big-endian) */

enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_POLICY = 1008,  /* refused credentials */
    WS_CLOSE_TOO_BIG = 1009, /* a message over ATELIER_WS_MAX_MESSAGE */
    WS_CLOSE_ERROR = 1011,   /* the server failed */
    WS_CLOSE_AGAIN = 1013,   /* too slow a reader, or a limit: reconnect later */
};

typedef struct ws_conn ws_conn_t;
typedef struct ws_attach ws_attach_t;
typedef struct ws_watch ws_watch_t;
typedef struct ws_open ws_open_t;
typedef struct ws_cred ws_cred_t;
typedef struct ws_pending ws_pending_t;

/* Who a connection acts as. */
typedef struct ws_who {
    int64_t scope;   /* the user whose sessions it reaches; 0: any (a service key naming none) */
    int64_t user_id; /* the caller's own user, for audit rows ('' when none) */
    char actor[48];  /* audit_log actor: "user:12", "key:3", "ticket:12", "compat:5" */
} ws_who_t;

/* One whole message waiting in a connection's control queue. */
typedef struct ws_ctl {
    struct ws_ctl *next;
    size_t len;
    int binary;
    char data[];
} ws_ctl_t;

typedef struct ws_early ws_early_t;

struct ws_conn {
    struct lws *wsi; /* NULL once the connection is gone */
    gateway_t *gw;
    int refs;       /* 1 for the socket + one per answer on its way */
    int authed;     /* credentials accepted: messages are handled */
    int counted;    /* counted against ATELIER_WS_MAX_PER_USER */
    int close_code; /* non-zero: closing; input is ignored */
    char close_reason[64];
    ws_who_t who;
    char cred_key[72]; /* the token or key it came with ("t:..."/"k:..."; ''); ws_revoked */
    ws_conn_t *all_prev, *all_next; /* every authed connection (ws.c) */
    char id[12];                    /* for log lines */
    char ip[64];
    char session_hint[AT_UUID_LEN + 1]; /* ?sessionId=: the one session watched at connect */
    ws_cred_t *cred;                    /* credentials still to check (ws_auth.c) */
    /* receive */
    char *rx;
    size_t rx_len, rx_cap;
    int rx_binary;
    ws_early_t *early;
    int nearly;
    /* send */
    int dirty;             /* on ws.c's list: output to write at the end of this loop turn */
    ws_conn_t *dirty_next; /* (holds a ref) */
    ws_ctl_t *ctl_head, *ctl_tail;
    size_t queued;       /* bytes waiting: control queue + terminal output */
    int64_t progress_ms; /* the last write to the socket, or when queued left 0 */
    /* terminals (ws_terms.c) and sessions (ws_events.c) */
    ws_attach_t *attach;
    int nattach;
    ws_attach_t *rr;       /* the attachment the writer serves next */
    ws_open_t *opens;      /* terminal_open on its way */
    ws_pending_t *pending; /* terminal_attach on its way */
    ws_watch_t *watch;
    int nwatch;
};

/* ---- ws.c ---------------------------------------------------------------- */
void ws_conn_ref(ws_conn_t *c);
void ws_conn_unref(ws_conn_t *c);
/* Still there and not closing: worth answering. */
int ws_conn_live(const ws_conn_t *c);
/* Queue a message (the JSON is stolen). */
void ws_send_json(ws_conn_t *c, json_t *msg);
void ws_send_text(ws_conn_t *c, const char *text, size_t len);
/* {"type":"error","code":code,"message":...} plus "id" when the client's
 * message had one. */
void ws_send_error(ws_conn_t *c, const char *id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Close with code after what is queued (error messages) has left;
 * drop_output first discards queued terminal output (a too slow reader). */
void ws_conn_close(ws_conn_t *c, int code, const char *reason, int drop_output);
/* Terminal output added n bytes to the queue (negative: sent): a queue over
 * ATELIER_WS_SEND_QUEUE_MAX drops the client (1013; it reconnects with
 * lastSeq). Returns 0 while the connection may go on. */
int ws_conn_queued(ws_conn_t *c, long long n);
void ws_conn_wake(ws_conn_t *c);
/* Credentials accepted (possibly after the upgrade): handle messages. */
void ws_conn_authed(ws_conn_t *c);
/* Audit parameters $1..$3 (records.h) for a statement made for c. */
void ws_audit_params(const ws_conn_t *c, const char *p[3], char uid_buf[24]);
/* The dynamic subprotocol entry's name (the credential a client offered,
 * answered back as RFC 6455 requires). */
void ws_set_echo_protocol(const char *name);
/* "2026-01-01T00:00:00.000Z" now. */
void ws_now_iso(char out[32]);

/* ---- ws_auth.c ----------------------------------------------------------- */
/* At LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: 0 to go on (a connection is made
 * and kept for ws_auth_take), 1 when an HTTP error was answered, -1 to
 * hang up. */
int ws_auth_upgrade(gateway_t *gw, struct lws *wsi);
/* At LWS_CALLBACK_ESTABLISHED: the connection ws_auth_upgrade made. */
ws_conn_t *ws_auth_take(struct lws *wsi);
/* Check what could not be checked before the upgrade, then count the
 * connection against its user; ws_conn_authed or a close follows. */
void ws_auth_start(ws_conn_t *c);
void ws_auth_release(ws_conn_t *c);
void ws_cred_free(ws_cred_t *cred);
void ws_auth_shutdown(void);

/* ---- ws_terms.c ---------------------------------------------------------- */
void ws_term_open(ws_conn_t *c, json_t *msg, const char *id);
void ws_term_input(ws_conn_t *c, json_t *msg, const char *id);
void ws_term_input_binary(ws_conn_t *c, const char *data, size_t len);
void ws_term_resize(ws_conn_t *c, json_t *msg, const char *id);
void ws_term_close(ws_conn_t *c, json_t *msg, const char *id);
void ws_term_attach(ws_conn_t *c, json_t *msg, const char *id);
/* The next frame of terminal output (round-robin over the connection's
 * terminals) into buf (WS_FRAME_MAX); 0 when there is none. */
size_t ws_terms_next_frame(ws_conn_t *c, unsigned char *buf, int *binary);
int ws_terms_pending(const ws_conn_t *c);
/* Drop every queued output byte of c (it is being dropped as too slow). */
void ws_terms_drop_output(ws_conn_t *c);
/* The send queue drained: paged replays go on. */
void ws_terms_drained(ws_conn_t *c);
void ws_terms_conn_closed(ws_conn_t *c);
void ws_terms_message(const char *terminal, const char *payload, size_t len);
void ws_terms_channel_ready(const char *terminal);
void ws_terms_channels_lost(void);
void ws_terms_shutdown(void);

/* ---- ws_events.c --------------------------------------------------------- */
void ws_events_subscribe(ws_conn_t *c, json_t *msg, const char *id);
/* Watch a session the connection is known to own (after an open). */
void ws_events_watch(ws_conn_t *c, const char *session);
/* At connect: the session of ?sessionId=, or the user's newest live ones. */
void ws_events_connect(ws_conn_t *c);
void ws_events_conn_closed(ws_conn_t *c);
void ws_events_message(const char *session, const char *payload, size_t len);
void ws_events_channel_ready(const char *session);
void ws_events_shutdown(void);

/* ---- ws_pubsub.c --------------------------------------------------------- */
int ws_pubsub_init(gateway_t *gw);
void ws_pubsub_free(void);
/* Want messages of channel ("term:{id}", "ev:{session}"); SUBSCRIBE on the
 * first reference, UNSUBSCRIBE after the last. */
void ws_pubsub_ref(const char *channel);
void ws_pubsub_unref(const char *channel);
/* The subscription is confirmed: from now on no message is missed. */
int ws_pubsub_ready(const char *channel);
/* The link terminal input is written on (XADD term:{id}:in); NULL while
 * it is down. */
struct redisAsyncContext *ws_input_link(void);

/* ---- ws_text.c ----------------------------------------------------------- */
/* Valid UTF-8 of carry + in into out (capacity 3 * (n + 4)): invalid bytes
 * become U+FFFD, an incomplete sequence at the end stays in carry for the
 * next read. Returns bytes written. */
size_t ws_utf8_clean(unsigned char carry[4], int *ncarry, const unsigned char *in, size_t n,
                     unsigned char *out);
/* The incomplete sequence at the end of in (what ws_utf8_clean would carry),
 * copied into carry; returns its length. */
size_t ws_utf8_tail(const unsigned char *in, size_t n, unsigned char carry[4]);
/* JSON string body of in (no quotes) into out (capacity 6 * n). */
size_t ws_json_escape(const unsigned char *in, size_t n, char *out);

#endif
