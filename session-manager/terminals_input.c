/*
 * Terminal input (terminals.h): one connection of its own runs a blocking
 * XREAD over every registered terminal's term:{id}:in; when the set
 * changes, CLIENT UNBLOCK (from the output connection) ends it and it is
 * issued again. Entries taken are trimmed, so the stream holds only what a
 * restarted manager has yet to take.
 */
#include "terminals_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "atelier/log.h"

#define READ_COUNT "16" /* input entries per stream and XREAD */
#define READ_RETRY_MS 1000
#define ACTIVITY_EVERY_MS 5000 /* last_activity written at most this often per session */

static struct {
    at_redis_t *conn; /* the blocking XREAD only */
    long long id;     /* its CLIENT ID, -1 unknown */
    int reading;      /* an XREAD is in flight */
    int unblocking;   /* a CLIENT UNBLOCK was sent for it */
    at_io_timer_t *retry;
} rd;

static void read_next(void);

void sm_term_flush_input(term_t *t)
{
    while (t->inlen) {
        ssize_t w = write(t->master, t->inbuf, t->inlen);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) { /* the terminal is gone: nothing will read it */
            t->inlen = 0;
            return;
        }
        memmove(t->inbuf, t->inbuf + w, t->inlen - (size_t)w);
        t->inlen -= (size_t)w;
    }
}

static void write_input(term_t *t, const char *d, size_t len)
{
    if (t->master < 0)
        return;
    while (!t->inlen && len) {
        ssize_t w = write(t->master, d, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN)
            return; /* EIO: the shell is gone, its end follows */
        if (w <= 0)
            break;
        d += w;
        len -= (size_t)w;
    }
    if (!len)
        return;
    size_t room = SM_TERM_INPUT_MAX - t->inlen;
    if (len > room) {
        t->dropped_in += len - room;
        at_warn("event=terminal_input_dropped terminal=%s bytes=%zu pending=%zu "
                "reason=\"the shell does not read its input\"",
                t->id, len - room, t->inlen);
        len = room;
    }
    if (!t->inbuf && !(t->inbuf = malloc(SM_TERM_INPUT_MAX))) {
        at_error("event=terminal_input_dropped terminal=%s bytes=%zu error=\"out of memory\"",
                 t->id, len);
        return;
    }
    memcpy(t->inbuf + t->inlen, d, len);
    t->inlen += len;
}

static void resize(term_t *t, long long cols, long long rows)
{
    if (cols < 1 || cols > SIZE_MAX_CELLS || rows < 1 || rows > SIZE_MAX_CELLS || t->master < 0) {
        at_warn("event=terminal_resize_refused terminal=%s cols=%lld rows=%lld", t->id, cols, rows);
        return;
    }
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    if (ioctl(t->master, TIOCSWINSZ, &ws) != 0) {
        at_warn("event=terminal_resize_failed terminal=%s error=\"%s\"", t->id, strerror(errno));
        return;
    }
    char c[16], r[16];
    snprintf(c, sizeof c, "%lld", cols);
    snprintf(r, sizeof r, "%lld", rows);
    const char *p[] = {t->id, c, r};
    at_db_query(at_worker_db(sm_terms.w),
                "UPDATE terminals SET cols = $2::int, rows = $3::int WHERE id = $1", 3, p, NULL,
                NULL);
}

/* Signals a user may send to what runs in the foreground. */
static int signal_allowed(long long sig)
{
    return sig == SIGHUP || sig == SIGINT || sig == SIGQUIT || sig == SIGKILL || sig == SIGTERM ||
           sig == SIGCONT || sig == SIGSTOP || sig == SIGTSTP;
}

/* The foreground process group as this process sees it (TIOCGPGRP works on
 * the master side); root on the host may signal it directly. A group id of 0
 * or 1 would mean "ours" or "init's": never. */
static void send_signal(term_t *t, long long sig)
{
    if (!signal_allowed(sig) || t->master < 0) {
        at_warn("event=terminal_signal_refused terminal=%s sig=%lld", t->id, sig);
        return;
    }
    pid_t pgrp = tcgetpgrp(t->master);
    if (pgrp <= 1 || kill(-pgrp, (int)sig) != 0)
        at_warn("event=terminal_signal_failed terminal=%s sig=%lld pgrp=%d error=\"%s\"", t->id,
                sig, (int)pgrp, pgrp <= 1 ? "no foreground process group" : strerror(errno));
}

/* Terminal input is activity (the culler's idle clock), written at most
 * every ACTIVITY_EVERY_MS per session. */
static void note_activity(tsess_t *s)
{
    int64_t now = at_mono_us() / 1000;
    if (now - s->activity_ms < ACTIVITY_EVERY_MS)
        return;
    s->activity_ms = now;
    const char *p[] = {s->uuid};
    at_db_query(at_worker_db(sm_terms.w),
                "UPDATE code_sessions SET last_activity = now(), last_activity_kind = 'terminal' "
                "WHERE uuid = $1 AND status = 'ready'",
                1, p, NULL, NULL);
}

static long long field_int(const redisReply *fields, const char *name)
{
    const redisReply *v = sm_term_field(fields, name);
    if (!v || v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 12)
        return -1;
    char tmp[16];
    memcpy(tmp, v->str, v->len);
    tmp[v->len] = '\0';
    char *end;
    long long x = strtoll(tmp, &end, 10);
    return *end ? -1 : x;
}

static void take_entry(term_t *t, const redisReply *fields)
{
    const redisReply *type = fields->type == REDIS_REPLY_ARRAY ? sm_term_field(fields, "t") : NULL;
    if (!type || type->type != REDIS_REPLY_STRING) {
        at_warn("event=terminal_input_malformed terminal=%s", t->id);
        return;
    }
    if (type->len == 2 && !memcmp(type->str, "in", 2)) {
        const redisReply *d = sm_term_field(fields, "d");
        if (d && d->type == REDIS_REPLY_STRING)
            write_input(t, d->str, d->len);
    } else if (type->len == 6 && !memcmp(type->str, "resize", 6)) {
        resize(t, field_int(fields, "cols"), field_int(fields, "rows"));
    } else if (type->len == 6 && !memcmp(type->str, "signal", 6)) {
        send_signal(t, field_int(fields, "sig"));
    } else {
        at_warn("event=terminal_input_malformed terminal=%s type=\"%.*s\"", t->id,
                (int)(type->len > 16 ? 16 : type->len), type->str);
    }
}

/* "<ms>-<seq>" -> the smallest id after it, for XTRIM MINID. */
static int next_id(const char *id, char *out, size_t cap)
{
    unsigned long long ms, seq;
    char tail;
    if (sscanf(id, "%llu-%llu%c", &ms, &seq, &tail) != 2)
        return -1;
    if (seq == ~0ULL)
        return snprintf(out, cap, "%llu-0", ms + 1) < (int)cap ? 0 : -1;
    return snprintf(out, cap, "%llu-%llu", ms, seq + 1) < (int)cap ? 0 : -1;
}

/* One stream of an XREAD reply: [key, [[id, [field, value, ...]], ...]]. */
static void take_stream(const redisReply *st)
{
    if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
        st->element[0]->type != REDIS_REPLY_STRING || st->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    const redisReply *key = st->element[0], *entries = st->element[1];
    char id[AT_UUID_LEN + 1];
    if (key->len != 5 + AT_UUID_LEN + 3)
        return;
    memcpy(id, key->str + 5, AT_UUID_LEN);
    id[AT_UUID_LEN] = '\0';
    term_t *t = sm_term_find(id);
    const char *last = NULL;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        last = e->element[0]->str;
        if (t)
            take_entry(t, e->element[1]);
    }
    if (!t || !last)
        return;
    at_strlcpy(t->in_last, last, sizeof t->in_last);
    note_activity(t->s);
    sm_term_watch_update(t);
    char min[ENTRY_ID_MAX];
    if (next_id(last, min, sizeof min) == 0) /* taken: a restarted manager starts after it */
        at_redis_cmd(sm_terms.out, NULL, NULL, "XTRIM %s MINID %s", t->in_key, min);
}

static void read_done(at_redis_t *r, redisReply *reply, void *arg)
{
    (void)arg;
    rd.reading = 0;
    if (!r || sm_terms.closing || !reply)
        return; /* freed, or the link dropped: in_up reads again */
    if (reply->type == REDIS_REPLY_ERROR) {
        at_error("event=terminal_input_read_failed error=\"%s\" retry_ms=%d", reply->str,
                 READ_RETRY_MS);
        at_io_timer_start(rd.retry, READ_RETRY_MS, 0);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements; i++)
            take_stream(reply->element[i]);
    read_next(); /* a nil reply: CLIENT UNBLOCK, the set changed */
}

/* XREAD COUNT n BLOCK 0 STREAMS <every terminal's input> <the last id of each>. */
static void read_next(void)
{
    if (sm_terms.closing || rd.reading || rd.id < 0 || !at_redis_connected(rd.conn) ||
        !sm_terms.nterms)
        return;
    size_t argc = 6 + 2 * sm_terms.nterms;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        at_error("event=terminal_input_read_failed error=\"out of memory\" retry_ms=%d",
                 READ_RETRY_MS);
        at_io_timer_start(rd.retry, READ_RETRY_MS, 0);
        return;
    }
    const char *head[] = {"XREAD", "COUNT", READ_COUNT, "BLOCK", "0", "STREAMS"};
    size_t n = 0;
    for (; n < 6; n++)
        argv[n] = head[n];
    size_t k = 0;
    for (size_t b = 0; b < TERM_BUCKETS; b++)
        for (term_t *t = sm_terms.terms[b]; t; t = t->hnext, k++) {
            argv[6 + k] = t->in_key;
            argv[6 + sm_terms.nterms + k] = t->in_last;
        }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (at_redis_argv(rd.conn, read_done, NULL, (int)argc, argv, lens) == AT_OK) {
        rd.reading = 1;
        rd.unblocking = 0;
    }
    free(argv);
    free(lens);
}

static void read_retry(void *arg)
{
    (void)arg;
    read_next();
}

/* The set of input streams changed: the XREAD in flight lists the old one. */
void sm_term_inputs_changed(void)
{
    if (!rd.reading) {
        read_next();
    } else if (!rd.unblocking && rd.id >= 0) {
        if (at_redis_cmd(sm_terms.out, NULL, NULL, "CLIENT UNBLOCK %lld", rd.id) == AT_OK)
            rd.unblocking = 1;
    }
}

static void in_client_id(at_redis_t *r, redisReply *reply, void *arg)
{
    (void)arg;
    if (!r || sm_terms.closing)
        return;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        at_error("event=terminal_input_failed error=\"CLIENT ID: %s\"",
                 at_redis_reply_error(reply));
        return;
    }
    rd.id = reply->integer;
    read_next();
}

static void in_up(at_redis_t *r, void *arg)
{
    (void)arg;
    rd.reading = 0;
    rd.id = -1;
    if (at_redis_cmd(r, in_client_id, NULL, "CLIENT ID") != AT_OK)
        at_error("event=terminal_input_failed error=\"CLIENT ID not sent\"");
}

int sm_term_input_start(void)
{
    rd.id = -1;
    rd.retry = at_io_timer_new(at_worker_io(sm_terms.w), read_retry, NULL);
    rd.conn = at_redis_new(at_worker_io(sm_terms.w), sm_term_cfg()->redis_url, "term-in");
    if (!rd.retry || !rd.conn)
        return -1;
    at_redis_on_up(rd.conn, in_up, NULL);
    return 0;
}

void sm_term_input_stop(void)
{
    at_redis_free(rd.conn);
    rd.conn = NULL;
    at_io_timer_free(rd.retry);
    rd.retry = NULL;
}
