/*
 * Terminal output to WebSocket clients. The manager appends each chunk to
 * term:{id}:out as entry 0-<seq> and publishes "<seq>\n<bytes>" on
 * term:{id}. An attachment follows one terminal for one connection:
 *
 *   A_SYNC  the channel is subscribed first; then the stream is read from
 *           the client's lastSeq (XRANGE, paged by the room left in the
 *           send queue) while published messages are held; at the end of
 *           the stream the held ones newer than the last entry read follow.
 *   A_LIVE  published messages in seq order; a gap (a message lost with
 *           the link, say) goes back to A_SYNC.
 *
 * The exit is published as "<seq> exit <code>" (a space, never the newline
 * output carries), so no output can be taken for it.
 *
 * XADD and PUBLISH run in that order on the manager's connection, and the
 * subscription is confirmed before the stream is read, so whatever the
 * read misses is published after it: never a gap, and seq filters the
 * duplicates. All of it is in Redis, so any gateway can serve a client.
 */
#include "ws_terms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/util.h"

#define BUCKETS 4096
#define ENTRY_MAX 16384 /* what the manager puts in one entry, at most */
#define PAGE_MAX 64     /* entries in one XRANGE */

struct ws_live {
    ws_live_t *next;
    int64_t seq;
    int is_exit;
    int code;
    size_t len;
    char data[];
};

typedef struct term {
    struct term *next;
    ws_attach_t *attached;
    char id[AT_UUID_LEN + 1];
} term_t;

static term_t *g_terms[BUCKETS];

static term_t **term_slot(const char *id)
{
    unsigned h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    term_t **pp = &g_terms[h % BUCKETS];
    while (*pp && strcmp((*pp)->id, id))
        pp = &(*pp)->next;
    return pp;
}

static void channel(char out[64], const char *terminal)
{
    snprintf(out, 64, "term:%s", terminal);
}

static void read_more(ws_attach_t *at);

/* Entry seq taken: out bytes or the exit. */
static void take_entry(ws_attach_t *at, int64_t seq, int is_exit, const char *d, size_t n, int code)
{
    if (at->exited)
        return;
    at->last = seq;
    if (is_exit)
        ws_seg_exit(at, seq, code);
    else
        ws_seg_output(at, seq, d, n);
}

/* ---- attachments --------------------------------------------------------------- */

static void at_unref(ws_attach_t *at)
{
    if (--at->refs > 0)
        return;
    ws_conn_unref(at->conn);
    free(at);
}

static void drop_live(ws_attach_t *at)
{
    while (at->live_head) {
        ws_live_t *l = at->live_head;
        at->live_head = l->next;
        free(l);
    }
    at->live_tail = NULL;
    at->live_bytes = 0;
}

ws_attach_t *ws_attach_new(ws_conn_t *c, const char *terminal, const char *session, int binary,
                           int64_t last, int is_auto)
{
    term_t **pp = term_slot(terminal), *t = *pp;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        at_strlcpy(t->id, terminal, sizeof t->id);
        *pp = t;
    }
    ws_attach_t *at = calloc(1, sizeof *at);
    if (!at) {
        if (!t->attached) {
            *pp = t->next;
            free(t);
        }
        return NULL;
    }
    at->conn = c;
    ws_conn_ref(c);
    at->refs = 1;
    at_strlcpy(at->terminal, terminal, sizeof at->terminal);
    at_strlcpy(at->session, session, sizeof at->session);
    at->binary = binary;
    at->is_auto = is_auto;
    at->state = A_SYNC;
    at->last = last;
    at->primed = last == 0; /* nothing before the first entry to finish */
    ws_attach_t **tail = &c->attach;
    while (*tail)
        tail = &(*tail)->next;
    *tail = at;
    c->nattach++;
    at->tnext = t->attached;
    t->attached = at;
    char ch[64];
    channel(ch, terminal);
    ws_pubsub_ref(ch);
    read_more(at); /* at once when subscribed already, else when confirmed */
    return at;
}

void ws_attach_detach(ws_attach_t *at)
{
    if (at->detached)
        return;
    at->detached = 1;
    ws_conn_t *c = at->conn;
    for (ws_attach_t **pp = &c->attach; *pp; pp = &(*pp)->next) {
        if (*pp == at) {
            *pp = at->next;
            c->nattach--;
            break;
        }
    }
    if (c->rr == at)
        c->rr = at->next;
    term_t **tp = term_slot(at->terminal), *t = *tp;
    if (t) {
        for (ws_attach_t **pp = &t->attached; *pp; pp = &(*pp)->tnext) {
            if (*pp == at) {
                *pp = at->tnext;
                break;
            }
        }
        if (!t->attached) {
            *tp = t->next;
            free(t);
        }
    }
    char ch[64];
    channel(ch, at->terminal);
    ws_pubsub_unref(ch);
    ws_segs_drop(at);
    drop_live(at);
    at_unref(at);
}

ws_attach_t *ws_attach_find(const ws_conn_t *c, const char *terminal)
{
    for (ws_attach_t *at = c->attach; at; at = at->next)
        if (!strcmp(at->terminal, terminal))
            return at;
    return NULL;
}

ws_attach_t *ws_attach_auto(const ws_conn_t *c, const char *session)
{
    for (ws_attach_t *at = c->attach; at; at = at->next)
        if (at->is_auto && !at->exited && !strcmp(at->session, session))
            return at;
    return NULL;
}

void ws_terms_conn_closed(ws_conn_t *c)
{
    while (c->attach)
        ws_attach_detach(c->attach);
}

/* ---- reading the stream -------------------------------------------------------- */

static int64_t parse_seq(const char *s, size_t n, const char **rest)
{
    int64_t v = 0;
    size_t i = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i < 18)
        v = v * 10 + (s[i++] - '0');
    if (!i)
        return -1;
    if (rest)
        *rest = s + i;
    return v;
}

/* One XRANGE entry: [id, [field, value, ...]]. */
static int parse_entry(const redisReply *e, int64_t *seq, int *is_exit, const char **d, size_t *n,
                       int *code)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
        return -1;
    const char *id = e->element[0]->str;
    if (strncmp(id, "0-", 2) != 0 || (*seq = parse_seq(id + 2, strlen(id + 2), NULL)) <= 0)
        return -1;
    const redisReply *f = e->element[1];
    *is_exit = 0;
    *d = "";
    *n = 0;
    *code = 0;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "t"))
            *is_exit = !strcmp(v->str, "exit");
        else if (!strcmp(k->str, "d")) {
            *d = v->str;
            *n = v->len;
        } else if (!strcmp(k->str, "code"))
            *code = atoi(v->str);
    }
    return 0;
}

/* Before a replay, the last bytes of the entries up to lastSeq (the client
 * has them) are read again: a character they left unfinished was held
 * back, never sent, and is finished by the entries that follow. While
 * unprimed, carry holds the last (up to 3) raw bytes seen. */
static void roll_tail(ws_attach_t *at, const char *d, size_t n)
{
    unsigned char buf[3 + 3];
    size_t k = (size_t)at->ncarry, take = n < 3 ? n : 3;
    memcpy(buf, at->carry, k);
    memcpy(buf + k, d + n - take, take);
    k += take;
    size_t keep = k < 3 ? k : 3;
    memcpy(at->carry, buf + k - keep, keep);
    at->ncarry = (int)keep;
}

static void prime(ws_attach_t *at)
{
    if (at->primed)
        return;
    unsigned char tail[4];
    size_t k = ws_utf8_tail(at->carry, (size_t)at->ncarry, tail);
    memcpy(at->carry, tail, k);
    at->ncarry = (int)k;
    at->primed = 1;
}

/* The stream is read to its end: the held live messages follow, unless one
 * is missing (then read again). */
static void go_live(ws_attach_t *at)
{
    char ch[64];
    channel(ch, at->terminal);
    if (!ws_pubsub_ready(ch)) /* the link dropped meanwhile: read again once back */
        return;
    while (at->live_head) {
        ws_live_t *l = at->live_head;
        if (l->seq > at->last + 1) {
            read_more(at);
            return;
        }
        at->live_head = l->next;
        if (!at->live_head)
            at->live_tail = NULL;
        at->live_bytes -= l->len;
        if (l->seq == at->last + 1)
            take_entry(at, l->seq, l->is_exit, l->data, l->len, l->code);
        free(l);
    }
    at->state = A_LIVE;
}

static void got_range(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    ws_attach_t *at = arg;
    at->reading = 0;
    if (at->detached || !ws_conn_live(at->conn)) {
        at_unref(at);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        at_warn("event=ws_replay_failed conn=%s terminal=%s error=\"%s\"", at->conn->id,
                at->terminal, at_redis_reply_error(reply));
        ws_send_error(at->conn, NULL, "unavailable", "Cannot read terminal %s output now: %s",
                      at->terminal, at_redis_reply_error(reply));
        ws_conn_close(at->conn, WS_CLOSE_AGAIN, "terminal output unavailable", 0);
        at_unref(at);
        return;
    }
    for (size_t i = 0; i < reply->elements && !at->exited; i++) {
        int64_t seq;
        int is_exit, code;
        const char *d;
        size_t n;
        if (parse_entry(reply->element[i], &seq, &is_exit, &d, &n, &code) != 0)
            continue;
        if (!at->primed && seq <= at->last) { /* the client has it: only its UTF-8 tail */
            if (!is_exit && !at->binary)
                roll_tail(at, d, n);
            continue;
        }
        prime(at);
        if (seq <= at->last)
            continue;
        if (seq > at->last + 1 && at->last > 0) /* trimmed from the capped stream */
            ws_attach_message(at,
                              json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "type", "error", "code",
                                        "output_lost", "terminalId", at->terminal, "message",
                                        "Output older than what the server keeps was dropped "
                                        "(ATELIER_TERM_REPLAY_ENTRIES)",
                                        "fromSeq", (json_int_t)(at->last + 1), "toSeq",
                                        (json_int_t)(seq - 1)));
        take_entry(at, seq, is_exit, d, n, code);
    }
    prime(at);
    if (at->exited) {
        drop_live(at);
        at->state = A_LIVE;
    } else if (reply->elements >= (size_t)at->page || at->reread) {
        at->reread = 0;
        read_more(at);
    } else {
        go_live(at);
    }
    at_unref(at);
}

/* Read the next page of the stream if the channel is subscribed and the
 * send queue has room for it. */
static void read_more(ws_attach_t *at)
{
    ws_conn_t *c = at->conn;
    char ch[64];
    channel(ch, at->terminal);
    if (at->reading || at->detached || at->exited || !ws_conn_live(c) || !ws_pubsub_ready(ch))
        return;
    long long room = (long long)c->gw->cfg.ws_send_queue_max / 2 - (long long)c->queued;
    if (room <= 0) {
        at->waiting_room = 1;
        return;
    }
    at->waiting_room = 0;
    long long count = room / (3 * ENTRY_MAX); /* entries may grow 3x as UTF-8 repairs */
    if (count < 1)
        count = 1;
    if (count > PAGE_MAX)
        count = PAGE_MAX;
    if (!at->primed && count < 5) /* the 4 entries up to lastSeq and one more */
        count = 5;
    char key[64], start[32], cnt[24];
    snprintf(key, sizeof key, "term:%s:out", at->terminal);
    if (at->primed) /* after the last entry taken */
        snprintf(start, sizeof start, "(0-%lld", (long long)at->last);
    else /* a few before lastSeq too, for their unfinished UTF-8 */
        snprintf(start, sizeof start, "0-%lld", (long long)(at->last > 3 ? at->last - 3 : 1));
    snprintf(cnt, sizeof cnt, "%lld", count);
    const char *argv[] = {"XRANGE", key, start, "+", "COUNT", cnt};
    at->reading = 1;
    at->reread = 0;
    at->page = (int)count;
    at->refs++;
    if (at_redis_argv(c->gw->ws_redis, got_range, at, 6, argv, NULL) != AT_OK) {
        at->reading = 0;
        at->refs--;
        ws_send_error(c, NULL, "unavailable", "Redis unavailable");
        ws_conn_close(c, WS_CLOSE_AGAIN, "redis unavailable", 0);
    }
}

/* ---- published messages -------------------------------------------------------- */

static void hold_live(ws_attach_t *at, int64_t seq, const char *d, size_t n, int is_exit, int code)
{
    if (at->live_bytes + n > WS_LIVE_BUF_MAX) {
        at->reread = 1; /* the stream has it: read again rather than hold more */
        return;
    }
    ws_live_t *l = malloc(sizeof *l + n);
    if (!l) {
        at->reread = 1;
        return;
    }
    l->next = NULL;
    l->seq = seq;
    l->is_exit = is_exit;
    l->code = code;
    l->len = n;
    memcpy(l->data, d, n);
    if (at->live_tail)
        at->live_tail->next = l;
    else
        at->live_head = l;
    at->live_tail = l;
    at->live_bytes += n;
}

/* " exit <code>" after the seq: 1 and *code set; else 0. */
static int parse_exit(const char *d, size_t n, int *code)
{
    char buf[24];
    if (n < 7 || n >= sizeof buf || memcmp(d, " exit ", 6) != 0)
        return 0;
    memcpy(buf, d + 6, n - 6);
    buf[n - 6] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    if (*end || end == buf || v < -255 || v > 255)
        return 0;
    *code = (int)v;
    return 1;
}

/* More than half the send queue is waiting: output is held back (in the
 * stream) and read from there as the queue drains. A connection with output
 * waiting and nothing written for WS_STALL_MS reads nothing at all: it is
 * dropped (too_slow; it can reconnect with lastSeq). A slow reader is
 * slowed, never dropped. */
#define WS_STALL_MS 10000

static int queue_full(ws_conn_t *c)
{
    if (c->queued && at_mono_us() / 1000 - c->progress_ms > WS_STALL_MS) {
        at_warn("event=ws_slow_client conn=%s actor=%s queued=%zu stalled_ms=%d", c->id,
                c->who.actor, c->queued, WS_STALL_MS);
        ws_conn_close(c, WS_CLOSE_AGAIN, "too slow: reconnect with lastSeq", 1);
        return 1;
    }
    return (long long)c->queued > (long long)c->gw->cfg.ws_send_queue_max / 2;
}

void ws_terms_message(const char *terminal, const char *payload, size_t len)
{
    term_t *t = *term_slot(terminal);
    if (!t)
        return;
    const char *rest;
    int64_t seq = parse_seq(payload, len, &rest);
    int code = 0, is_exit = 0;
    if (seq > 0 && rest < payload + len && *rest == ' ')
        is_exit = parse_exit(rest, len - (size_t)(rest - payload), &code);
    if (seq <= 0 || (!is_exit && (rest >= payload + len || *rest != '\n'))) {
        at_warn("event=ws_bad_output_message terminal=%s", terminal);
        return;
    }
    const char *d = is_exit ? "" : rest + 1;
    size_t n = is_exit ? 0 : len - (size_t)(d - payload);
    ws_attach_t *next;
    for (ws_attach_t *at = t->attached; at; at = next) {
        next = at->tnext;
        if (at->exited || !ws_conn_live(at->conn) || seq <= at->last)
            continue;
        int full = queue_full(at->conn);
        if (!ws_conn_live(at->conn))
            continue; /* dropped just now */
        if (at->state == A_LIVE && seq == at->last + 1 && !full) {
            take_entry(at, seq, is_exit, d, n, code);
            continue;
        }
        if (at->state == A_LIVE && seq == at->last + 1) {
            /* a reader slower than its terminal: the stream has the output;
             * it is read from there, a page at a time, as the queue drains */
            at->state = A_SYNC;
            read_more(at);
            continue;
        }
        hold_live(at, seq, d, n, is_exit, code);
        if (at->state == A_LIVE) { /* a gap */
            at->state = A_SYNC;
            read_more(at);
        }
    }
}

void ws_terms_channel_ready(const char *terminal)
{
    term_t *t = *term_slot(terminal);
    for (ws_attach_t *at = t ? t->attached : NULL; at; at = at->tnext)
        if (at->state == A_SYNC)
            read_more(at);
}

void ws_terms_channels_lost(void)
{
    for (int i = 0; i < BUCKETS; i++)
        for (term_t *t = g_terms[i]; t; t = t->next)
            for (ws_attach_t *at = t->attached; at; at = at->tnext)
                at->state = A_SYNC; /* read from the stream once subscribed again */
}

void ws_terms_drained(ws_conn_t *c)
{
    if ((long long)c->queued > (long long)c->gw->cfg.ws_send_queue_max / 2)
        return;
    ws_attach_t *next;
    for (ws_attach_t *at = c->attach; at; at = next) {
        next = at->next;
        if (at->waiting_room)
            read_more(at);
    }
}

void ws_terms_shutdown(void)
{
    for (int i = 0; i < BUCKETS; i++) {
        while (g_terms[i]) {
            term_t *t = g_terms[i];
            g_terms[i] = t->next;
            free(t);
        }
    }
}
