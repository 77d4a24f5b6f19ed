/*
 * Terminals (terminals.h): the registry, the output pump and the ends.
 * Input is terminals_input.c, the jobs terminals_jobs.c.
 *
 * A terminal's life on this instance:
 *
 *   open/attach (pool) -> registered: pumping once its seq is known (sync)
 *     │  master readable: one entry of <= SM_TERM_CHUNK bytes per wake-up
 *     │  input entries: written to the master (terminals_input.c)
 *   shell exit event / end of file on the master / terminal_close / session end
 *     │
 *   end: master closed, exit entry, row 'exited' or 'closed'
 *     │
 *   freed when its last Redis callback has run (refs)
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

#define PREFIX_MAX 24   /* "<seq>\n" ahead of the bytes of a PUBLISH */
#define ENTRY_COST 256  /* what an entry in flight counts for beyond its bytes */
#define HANGUP_CODE 129 /* 128 + SIGHUP: the status of a shell whose session ended */

sm_terms_t sm_terms;

static char readbuf[PREFIX_MAX + SM_TERM_CHUNK]; /* room for the prefix first */

static void sync_seq(term_t *t);

static unsigned hash(const char *s, unsigned n)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % n;
}

/* The value of a field in a stream entry's [field, value, ...] array. */
const redisReply *sm_term_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
            !memcmp(k->str, name, k->len))
            return fields->element[i + 1];
    }
    return NULL;
}

/* ---- registry ------------------------------------------------------------ */

term_t *sm_term_find(const char *id)
{
    for (term_t *t = sm_terms.terms[hash(id, TERM_BUCKETS)]; t; t = t->hnext)
        if (!strcmp(t->id, id))
            return t;
    return NULL;
}

tsess_t *sm_term_sess_find(const char *uuid)
{
    for (tsess_t *s = sm_terms.sessions[hash(uuid, SESS_BUCKETS)]; s; s = s->hnext)
        if (!strcmp(s->uuid, uuid))
            return s;
    return NULL;
}

tsess_t *sm_term_sess_get(const char *uuid)
{
    tsess_t *s = sm_term_sess_find(uuid);
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    at_strlcpy(s->uuid, uuid, sizeof s->uuid);
    unsigned b = hash(uuid, SESS_BUCKETS);
    s->hnext = sm_terms.sessions[b];
    sm_terms.sessions[b] = s;
    return s;
}

static void exits_stop(tsess_t *s)
{
    at_io_watch_free(s->exits_io);
    s->exits_io = NULL;
    if (s->exits)
        sm_terms.driver->exits_close(s->exits);
    s->exits = NULL;
}

/* A session with no terminal and no work in flight goes (its exit events
 * connection with it: init serves few connections). */
void sm_term_sess_release(tsess_t *s)
{
    if (s->terms || s->busy)
        return;
    exits_stop(s);
    for (tsess_t **p = &sm_terms.sessions[hash(s->uuid, SESS_BUCKETS)]; *p; p = &(*p)->hnext) {
        if (*p == s) {
            *p = s->hnext;
            break;
        }
    }
    free(s);
}

static void term_free(term_t *t)
{
    at_io_watch_free(t->io);
    at_io_timer_free(t->timer);
    if (t->master >= 0)
        close(t->master);
    free(t->inbuf);
    free(t);
}

static void term_unref(term_t *t)
{
    if (--t->refs == 0)
        term_free(t);
}

/* Out of the registry and its session: no more input, events or jobs. */
static void term_deregister(term_t *t)
{
    for (term_t **p = &sm_terms.terms[hash(t->id, TERM_BUCKETS)]; *p; p = &(*p)->hnext) {
        if (*p == t) {
            *p = t->hnext;
            sm_terms.nterms--;
            break;
        }
    }
    tsess_t *s = t->s;
    for (term_t **p = &s->terms; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            s->nterms--;
            break;
        }
    }
    t->s = NULL;
    sm_term_sess_release(s);
}

/* ---- the master's watcher ---------------------------------------------------- */

static int can_read(const term_t *t)
{
    return t->master >= 0 && !t->eof && !t->ended && t->synced &&
           at_redis_connected(sm_terms.out) && t->unsent + SM_TERM_CHUNK <= SM_TERM_UNSENT_MAX;
}

void sm_term_watch_update(term_t *t)
{
    if (!t->io)
        return;
    int ev = (can_read(t) ? AT_IO_READ : 0) | (t->inlen && t->master >= 0 ? AT_IO_WRITE : 0);
    if (ev != t->watching) {
        at_io_watch_set(t->io, ev);
        t->watching = ev;
    }
}

/* ---- output ------------------------------------------------------------------ */

/* One XADD + PUBLISH pair in flight; freed by the later of its replies. */
typedef struct chunk {
    term_t *t;
    size_t bytes;
    int refs;
    int failed;
} chunk_t;

static void chunk_reply(at_redis_t *r, redisReply *reply, void *arg)
{
    chunk_t *c = arg;
    term_t *t = c->t;
    if (r && (!reply || reply->type == REDIS_REPLY_ERROR)) {
        if (!c->failed)
            at_warn("event=terminal_output_failed terminal=%s seq=%llu error=\"%s\"", t->id,
                    (unsigned long long)t->seq, at_redis_reply_error(reply));
        c->failed = 1;
    }
    if (--c->refs > 0)
        return;
    t->unsent -= c->bytes;
    if (c->failed && !sm_terms.closing) {
        t->synced = 0; /* which seq Redis holds is unknown now: read it again */
        sync_seq(t);
    }
    free(c);
    if (!sm_terms.closing)
        sm_term_watch_update(t);
    term_unref(t);
}

/* XADD term:{id}:out MAXLEN ~ N 0-<seq> <fields> + PUBLISH term:{id} <payload>,
 * pipelined. The caller has the payload "<seq>\n<bytes>" ready. Returns 0 when
 * the entry was queued (seq is then used). */
static int send_entry(term_t *t, uint64_t seq, const char **fields, const size_t *flens,
                      int nfields, const char *payload, size_t plen, size_t bytes)
{
    char id[ENTRY_ID_MAX];
    snprintf(id, sizeof id, "0-%llu", (unsigned long long)seq);
    const char *argv[12];
    size_t lens[12];
    int n = 0;
    const char *head[] = {"XADD", t->out_key, "MAXLEN", "~", sm_terms.maxlen, id};
    for (int i = 0; i < 6; i++, n++) {
        argv[n] = head[i];
        lens[n] = strlen(head[i]);
    }
    for (int i = 0; i < nfields && n < 12; i++, n++) {
        argv[n] = fields[i];
        lens[n] = flens[i];
    }
    chunk_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->t = t;
    c->bytes = bytes + ENTRY_COST; /* so many tiny entries are bounded too */
    if (at_redis_argv(sm_terms.out, chunk_reply, c, n, argv, lens) != AT_OK) {
        free(c);
        return -1;
    }
    c->refs = 1;
    const char *pub[] = {"PUBLISH", t->channel, payload};
    size_t publens[] = {7, strlen(t->channel), plen};
    if (at_redis_argv(sm_terms.out, chunk_reply, c, 3, pub, publens) == AT_OK)
        c->refs++; /* best effort: the entry alone is enough for a replay */
    t->refs++;
    t->unsent += c->bytes;
    t->seq = seq;
    return 0;
}

/* data sits in readbuf at PREFIX_MAX: the "<seq>\n" prefix goes right before it. */
static void send_output(term_t *t, char *data, size_t n)
{
    uint64_t seq = t->seq + 1;
    char prefix[PREFIX_MAX];
    int plen = snprintf(prefix, sizeof prefix, "%llu\n", (unsigned long long)seq);
    memcpy(data - plen, prefix, (size_t)plen);
    const char *fields[] = {"t", "out", "d", data};
    size_t flens[] = {1, 3, 1, n};
    if (send_entry(t, seq, fields, flens, 4, data - plen, (size_t)plen + n, n) != 0)
        at_warn("event=terminal_output_dropped terminal=%s bytes=%zu error=\"redis unavailable\"",
                t->id, n);
}

static void send_exit(term_t *t)
{
    char code[16], payload[PREFIX_MAX + 32];
    uint64_t seq = t->seq + 1;
    snprintf(code, sizeof code, "%d", t->code);
    int plen = snprintf(payload, sizeof payload, "%llu exit %d", (unsigned long long)seq, t->code);
    const char *fields[] = {"t", "exit", "code", code};
    size_t flens[] = {1, 4, 4, strlen(code)};
    if (send_entry(t, seq, fields, flens, 4, payload, (size_t)plen, 0) != 0) {
        at_warn("event=terminal_exit_entry_lost terminal=%s code=%d error=\"redis unavailable\"",
                t->id, t->code);
        return;
    }
    /* replay stays possible for a while; nothing reads the input any more */
    at_redis_cmd(sm_terms.out, NULL, NULL, "EXPIRE %s %d", t->out_key, SM_TERM_STREAM_TTL_S);
    at_redis_cmd(sm_terms.out, NULL, NULL, "DEL %s", t->in_key);
}

/* One entry's worth from the master: read until EAGAIN or SM_TERM_CHUNK
 * bytes. Level-triggered: if more waits, the loop comes back after the
 * other descriptors had their turn. */
static size_t pump(term_t *t)
{
    char *data = readbuf + PREFIX_MAX;
    size_t n = 0;
    while (n < SM_TERM_CHUNK) {
        ssize_t r = read(t->master, data + n, SM_TERM_CHUNK - n);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        t->eof = 1; /* EIO: no process has the terminal open any more */
        break;
    }
    if (n)
        send_output(t, data, n);
    return n;
}

/* ---- seq and the end ---------------------------------------------------------- */

/* XREVRANGE term:{id}:out + - COUNT 1: [[ "0-<seq>", [t, out|exit, ...]]] or []. */
static void synced(at_redis_t *r, redisReply *reply, void *arg)
{
    term_t *t = arg;
    t->syncing = 0;
    if (r && !sm_terms.closing && reply && reply->type == REDIS_REPLY_ARRAY) {
        t->seq = 0;
        t->last_is_exit = 0;
        const redisReply *e = reply->elements ? reply->element[0] : NULL;
        if (e && e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[0]->type == REDIS_REPLY_STRING) {
            const char *dash = strchr(e->element[0]->str, '-');
            t->seq = dash ? strtoull(dash + 1, NULL, 10) : 0;
            const redisReply *type =
                e->element[1]->type == REDIS_REPLY_ARRAY ? sm_term_field(e->element[1], "t") : NULL;
            t->last_is_exit = type && type->type == REDIS_REPLY_STRING && type->len == 4 &&
                              !memcmp(type->str, "exit", 4);
        }
        t->synced = 1;
        at_debug("event=terminal_synced terminal=%s seq=%llu", t->id, (unsigned long long)t->seq);
        if (t->exit_due) {
            t->exit_due = 0;
            if (!t->last_is_exit)
                send_exit(t);
        }
        sm_term_watch_update(t);
    } else if (r && !sm_terms.closing && reply) {
        at_warn("event=terminal_sync_failed terminal=%s error=\"%s\"", t->id,
                at_redis_reply_error(reply));
    }
    term_unref(t);
}

static void sync_seq(term_t *t)
{
    if (t->syncing || t->synced)
        return;
    if (at_redis_cmd(sm_terms.out, synced, t, "XREVRANGE %s + - COUNT 1", t->out_key) == AT_OK) {
        t->syncing = 1;
        t->refs++;
    } /* else: out_up syncs it when the link is back */
}

static void out_up(at_redis_t *r, void *arg)
{
    (void)r;
    (void)arg;
    for (size_t b = 0; b < TERM_BUCKETS; b++)
        for (term_t *t = sm_terms.terms[b]; t; t = t->hnext) {
            sync_seq(t);
            sm_term_watch_update(t);
        }
}

static void record_end(const term_t *t)
{
    char code[16];
    snprintf(code, sizeof code, "%d", t->code);
    const char *p[] = {t->id, t->code >= 0 ? code : NULL, t->closing ? "t" : "f"};
    /* a row terminal_close (or the session's end) has closed stays closed */
    at_db_query(at_worker_db(sm_terms.w),
                "UPDATE terminals SET status = CASE WHEN $3::boolean OR status = 'closed'"
                " THEN 'closed' ELSE 'exited' END, exit_code = $2::int,"
                " closed_at = coalesce(closed_at, now()) WHERE id = $1 AND status <> 'exited'",
                3, p, NULL, NULL);
}

/* The terminal is over: what the master still holds goes out, then the exit
 * entry (after the sync when seq is not known yet), the row, and the
 * terminal leaves the registry. code -1: unknown. */
void sm_term_end(term_t *t, int code)
{
    if (t->ended)
        return;
    if (t->master >= 0 && !t->eof && t->synced && at_redis_connected(sm_terms.out))
        for (size_t sent = 0; sent < SM_TERM_UNSENT_MAX && !t->eof;) {
            size_t n = pump(t);
            if (!n)
                break;
            sent += n;
        }
    t->ended = 1;
    t->code = code;
    at_io_watch_free(t->io);
    t->io = NULL;
    if (t->timer)
        at_io_timer_stop(t->timer);
    if (t->master >= 0)
        close(t->master);
    t->master = -1;
    at_info("event=terminal_ended terminal=%s session=%s pid=%d code=%d closed=%d seq=%llu "
            "input_dropped=%zu",
            t->id, t->s->uuid, (int)t->pid, code, t->closing, (unsigned long long)t->seq,
            t->dropped_in);
    record_end(t);
    if (t->synced) {
        send_exit(t);
    } else {
        t->exit_due = 1;
        sync_seq(t);
    }
    term_deregister(t);
    sm_term_inputs_changed();
    term_unref(t);
}

static void end_timer(void *arg)
{
    term_t *t = arg;
    sm_term_end(t, t->exited ? t->code : -1);
}

static void arm_end(term_t *t, int ms)
{
    if (!t->timer && !(t->timer = at_io_timer_new(at_worker_io(sm_terms.w), end_timer, t))) {
        sm_term_end(t, t->exited ? t->code : -1);
        return;
    }
    at_io_timer_start(t->timer, (uint64_t)ms, 0);
}

/* End of file on the master, usually just before init reports the exit. */
static void got_eof(term_t *t)
{
    if (t->exited)
        sm_term_end(t, t->code);
    else
        arm_end(t, SM_TERM_EXIT_WAIT_MS);
}

/* The shell exited; a background job may still hold the terminal open, so
 * what is readable is read for a moment, then the master is closed (which
 * hangs up whatever still uses the terminal). */
static void got_exit(term_t *t, int code)
{
    t->exited = 1;
    t->code = code;
    if (t->eof)
        sm_term_end(t, code);
    else
        arm_end(t, SM_TERM_DRAIN_MS);
}

static void master_ready(int fd, int events, void *arg)
{
    (void)fd;
    term_t *t = arg;
    if ((events & AT_IO_WRITE) && t->inlen)
        sm_term_flush_input(t);
    if ((events & AT_IO_READ) && can_read(t)) {
        pump(t);
        if (t->eof) {
            sm_term_watch_update(t);
            got_eof(t);
            return;
        }
    }
    sm_term_watch_update(t);
}

static void exits_ready(int fd, int events, void *arg)
{
    (void)fd;
    (void)events;
    tsess_t *s = arg;
    pid_t pid;
    int code, rc;
    s->busy++; /* an ending terminal may be the session's last */
    while ((rc = sm_terms.driver->exits_next(s->exits, &pid, &code)) == 1) {
        for (term_t *t = s->terms; t; t = t->next)
            if (t->pid == pid) {
                got_exit(t, code);
                break;
            }
    }
    if (rc < 0) { /* the sandbox stopped, or init dropped us: masters tell the rest */
        at_info("event=terminal_exits_closed session=%s", s->uuid);
        exits_stop(s);
    }
    s->busy--;
    sm_term_sess_release(s);
}

void sm_term_exits_install(tsess_t *s, sm_exits_t *x)
{
    if (!x)
        return;
    if (s->exits) { /* two works raced: keep one */
        sm_terms.driver->exits_close(x);
        return;
    }
    s->exits = x;
    s->exits_io =
        at_io_watch_new(at_worker_io(sm_terms.w), sm_terms.driver->exits_fd(x), exits_ready, s);
    if (!s->exits_io) {
        exits_stop(s);
        return;
    }
    at_io_watch_set(s->exits_io, AT_IO_READ);
}

/* A terminal in the registry and its session (input is read for it from
 * now on); takes master (-1: none). NULL when out of memory. */
static term_t *term_new(tsess_t *s, const char *id, pid_t pid, int master)
{
    term_t *t = calloc(1, sizeof *t);
    if (!t) {
        if (master >= 0)
            close(master);
        return NULL;
    }
    at_strlcpy(t->id, id, sizeof t->id);
    snprintf(t->out_key, sizeof t->out_key, "term:%s:out", id);
    snprintf(t->in_key, sizeof t->in_key, "term:%s:in", id);
    snprintf(t->channel, sizeof t->channel, "term:%s", id);
    strcpy(t->in_last, "0-0"); /* the stream holds only what was not taken */
    t->pid = pid;
    t->master = master;
    t->refs = 1;
    t->s = s;
    t->next = s->terms;
    s->terms = t;
    s->nterms++;
    unsigned b = hash(id, TERM_BUCKETS);
    t->hnext = sm_terms.terms[b];
    sm_terms.terms[b] = t;
    sm_terms.nterms++;
    return t;
}

/* A live terminal: pumping starts when its seq is known. */
term_t *sm_term_add(tsess_t *s, const char *id, const sm_pty_t *pty)
{
    term_t *t = term_new(s, id, pty->pid, pty->master);
    if (!t)
        return NULL;
    t->io = at_io_watch_new(at_worker_io(sm_terms.w), t->master, master_ready, t);
    if (!t->io) {
        term_deregister(t);
        term_unref(t);
        return NULL;
    }
    sync_seq(t);
    sm_term_inputs_changed();
    return t;
}

/* A terminal whose process is gone (found so at attach): its row and the
 * exit entry, unless the stream already ends with one. */
void sm_term_gone(tsess_t *s, const char *id, pid_t pid, int code)
{
    term_t *t = term_new(s, id, pid, -1);
    if (!t)
        return;
    t->eof = 1;
    sm_term_end(t, code);
}

/* ---- the session's end ---------------------------------------------------------- */

void sm_term_session_end(const char *session)
{
    tsess_t *s = sm_term_sess_find(session);
    if (!s)
        return;
    s->busy++; /* held while its terminals leave it */
    while (s->terms) {
        term_t *t = s->terms;
        t->closing = 1;
        /* bash ignores the SIGTERM a stopping sandbox sends first: hang it up
         * (its session, as this process numbers it) so the stop is quick */
        pid_t sid = -1;
        if (t->master >= 0 && ioctl(t->master, TIOCGSID, &sid) == 0 && sid > 1)
            kill(-sid, SIGHUP);
        sm_term_end(t, t->exited ? t->code : HANGUP_CODE);
    }
    s->busy--;
    sm_term_sess_release(s);
}

/* ---- start and stop --------------------------------------------------------------- */

int sm_term_init(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool)
{
    sm_terms.w = w;
    sm_terms.driver = driver;
    sm_terms.pool = pool;
    snprintf(sm_terms.maxlen, sizeof sm_terms.maxlen, "%lld",
             (long long)sm_term_cfg()->term_replay_entries);
    sm_terms.out = at_redis_new(at_worker_io(w), sm_term_cfg()->redis_url, "term-out");
    if (!sm_terms.out || sm_term_input_start() != 0) {
        at_error("event=start_failed error=\"terminals: cannot make the Redis connections\"");
        sm_term_close();
        sm_term_free();
        return -1;
    }
    at_redis_on_up(sm_terms.out, out_up, NULL);
    return 0;
}

void sm_term_close(void)
{
    sm_terms.closing = 1;
}

/* Pending callbacks run (with no reply) while the connections are freed, so
 * the terminals they hold are freed after. */
void sm_term_free(void)
{
    sm_terms.closing = 1;
    sm_term_input_stop();
    at_redis_free(sm_terms.out);
    sm_terms.out = NULL;
    for (size_t b = 0; b < TERM_BUCKETS; b++)
        while (sm_terms.terms[b]) {
            term_t *t = sm_terms.terms[b];
            sm_terms.terms[b] = t->hnext;
            term_free(t);
        }
    sm_terms.nterms = 0;
    for (size_t b = 0; b < SESS_BUCKETS; b++)
        while (sm_terms.sessions[b]) {
            tsess_t *s = sm_terms.sessions[b];
            sm_terms.sessions[b] = s->hnext;
            exits_stop(s);
            free(s);
        }
}
