/*
 * What waits to be sent to a client for each of its terminals, and the
 * frames it becomes: output bytes coalesced per terminal up to WS_SEG_MAX
 * (a segment always holds whole entries, so its seq is exact), the exit,
 * and messages that must keep their place among the output (a policy
 * notice, output_lost). The connection's writer takes one frame at a time,
 * round-robin over its terminals, so a flooding terminal does not hold up
 * another's echo.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_terms.h"

#define ENTRY_MAX 16384 /* what the manager puts in one entry, at most */

typedef enum { SEG_OUT = 0, SEG_EXIT, SEG_MSG } seg_kind_t;

struct ws_seg {
    ws_seg_t *next;
    seg_kind_t kind;
    int64_t seq; /* OUT: of its last entry; EXIT: of the exit entry */
    int code;    /* EXIT */
    size_t len, cap;
    char *data; /* OUT: bytes (valid UTF-8 unless binary); MSG: a JSON message */
};

static unsigned char g_scratch[3 * (ENTRY_MAX + 8) + 16];

/* ---- what waits to be sent ----------------------------------------------------- */

static void seg_push(ws_attach_t *at, ws_seg_t *s)
{
    if (at->seg_tail)
        at->seg_tail->next = s;
    else
        at->seg_head = s;
    at->seg_tail = s;
    ws_conn_wake(at->conn);
    ws_conn_queued(at->conn, (long long)s->len); /* may drop the client */
}

static void seg_free(ws_seg_t *s)
{
    free(s->data);
    free(s);
}

void ws_segs_drop(ws_attach_t *at)
{
    while (at->seg_head) {
        ws_seg_t *s = at->seg_head;
        at->seg_head = s->next;
        at->conn->queued -= s->len;
        seg_free(s);
    }
    at->seg_tail = NULL;
}

/* Output bytes of entry seq: made valid UTF-8 for text clients, appended to
 * the last output segment while it stays under WS_SEG_MAX. */
void ws_seg_output(ws_attach_t *at, int64_t seq, const char *d, size_t n)
{
    const char *bytes = d;
    size_t m = n;
    if (!at->binary) {
        if (n > ENTRY_MAX) { /* longer than the contract allows: cleaned piecewise */
            ws_seg_output(at, seq, d, n - ENTRY_MAX);
            d += n - ENTRY_MAX;
            n = ENTRY_MAX;
        }
        m = ws_utf8_clean(at->carry, &at->ncarry, (const unsigned char *)d, n, g_scratch);
        bytes = (const char *)g_scratch;
    }
    if (!m)
        return;
    ws_seg_t *t = at->seg_tail;
    if (t && t->kind == SEG_OUT && t->len + m <= WS_SEG_MAX) {
        if (t->len + m > t->cap) {
            size_t cap = t->cap * 2 > t->len + m ? t->cap * 2 : t->len + m;
            char *b = realloc(t->data, cap);
            if (!b) {
                ws_conn_close(at->conn, WS_CLOSE_ERROR, "out of memory", 1);
                return;
            }
            t->data = b;
            t->cap = cap;
        }
        memcpy(t->data + t->len, bytes, m);
        t->len += m;
        t->seq = seq;
        ws_conn_wake(at->conn);
        ws_conn_queued(at->conn, (long long)m);
        return;
    }
    ws_seg_t *s = calloc(1, sizeof *s);
    char *b = malloc(m > 4096 ? m : 4096);
    if (!s || !b) {
        free(s);
        free(b);
        ws_conn_close(at->conn, WS_CLOSE_ERROR, "out of memory", 1);
        return;
    }
    memcpy(b, bytes, m);
    s->kind = SEG_OUT;
    s->seq = seq;
    s->data = b;
    s->len = m;
    s->cap = m > 4096 ? m : 4096;
    seg_push(at, s);
}

void ws_seg_exit(ws_attach_t *at, int64_t seq, int code)
{
    ws_seg_t *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->kind = SEG_EXIT;
    s->seq = seq;
    s->code = code;
    at->exited = 1;
    seg_push(at, s);
}

void ws_attach_message(ws_attach_t *at, json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    ws_seg_t *s = text ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        free(text);
        return;
    }
    s->kind = SEG_MSG;
    s->data = text;
    s->len = strlen(text);
    seg_push(at, s);
}

/* ---- frames ---------------------------------------------------------------------- */

int ws_terms_pending(const ws_conn_t *c)
{
    for (ws_attach_t *at = c->attach; at; at = at->next)
        if (at->seg_head)
            return 1;
    return 0;
}

static size_t render_output(const ws_attach_t *at, const ws_seg_t *s, unsigned char *buf)
{
    char ts[32];
    ws_now_iso(ts);
    char *p = (char *)buf;
    p += sprintf(p,
                 "{\"type\":\"terminal_output\",\"sessionId\":\"%s\",\"terminalId\":\"%s\","
                 "\"seq\":%lld,\"timestamp\":\"%s\",\"output\":\"",
                 at->session, at->terminal, (long long)s->seq, ts);
    p += ws_json_escape((const unsigned char *)s->data, s->len, p);
    *p++ = '"';
    *p++ = '}';
    return (size_t)(p - (char *)buf);
}

static size_t render_binary(const ws_attach_t *at, const ws_seg_t *s, unsigned char *buf)
{
    memcpy(buf, at->terminal, AT_UUID_LEN);
    uint64_t v = (uint64_t)s->seq;
    for (int i = 0; i < 8; i++)
        buf[AT_UUID_LEN + i] = (unsigned char)(v >> (56 - 8 * i));
    memcpy(buf + WS_BIN_HEADER, s->data, s->len);
    return WS_BIN_HEADER + s->len;
}

size_t ws_terms_next_frame(ws_conn_t *c, unsigned char *buf, int *binary)
{
    ws_attach_t *at = c->rr ? c->rr : c->attach;
    ws_attach_t *start = at;
    while (at && !at->seg_head) {
        at = at->next ? at->next : c->attach;
        if (at == start)
            return 0;
    }
    if (!at)
        return 0;
    ws_seg_t *s = at->seg_head;
    at->seg_head = s->next;
    if (!at->seg_head)
        at->seg_tail = NULL;
    c->rr = at->next;
    size_t n;
    *binary = 0;
    if (s->kind == SEG_OUT && at->binary) {
        n = render_binary(at, s, buf);
        *binary = 1;
    } else if (s->kind == SEG_OUT) {
        n = render_output(at, s, buf);
    } else if (s->kind == SEG_EXIT) {
        n = (size_t)sprintf(
            (char *)buf,
            "{\"type\":\"terminal_exit\",\"sessionId\":\"%s\",\"terminalId\":\"%s\","
            "\"seq\":%lld,\"code\":%d}",
            at->session, at->terminal, (long long)s->seq, s->code);
    } else {
        memcpy(buf, s->data, s->len);
        n = s->len;
    }
    c->queued -= s->len;
    seg_free(s);
    if (at->exited && !at->seg_head)
        ws_attach_detach(at);
    return n;
}

void ws_terms_drop_output(ws_conn_t *c)
{
    for (ws_attach_t *at = c->attach; at; at = at->next)
        ws_segs_drop(at);
}
