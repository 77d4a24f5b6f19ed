/* atelier-init's requests: one function per "op". Every request carries an "id" (an
 * integer or a string) that its reply echoes; a failure is {"id","ok":false,"error",
 * "errno"?} and changes nothing. */
#include "init.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_TERM "TERM=xterm-256color"
#define DEFAULT_SHUTDOWN_GRACE_MS 2000

/* One request being answered. */
struct req {
    struct init_state *st;
    struct client *c;
    json_t *msg;
    json_t *id; /* borrowed from msg; json null when absent or unusable */
};

static void reply_err(struct req *r, int err_no, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_err(struct req *r, int err_no, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *rep = json_pack("{s:O, s:b, s:s}", "id", r->id, "ok", 0, "error", msg);
    if (rep && err_no)
        json_object_set_new(rep, "errno", json_integer(err_no));
    if (rep)
        init_client_send(r->st, r->c, rep, NULL, 0);
    json_decref(rep);
}

/* Sends {"id","ok":true, ...body} with fds attached; takes ownership of body. */
static void reply_ok(struct req *r, json_t *body, const int *fds, int nfds)
{
    json_t *rep = body ? body : json_object();
    if (!rep)
        return;
    json_object_set(rep, "id", r->id);
    json_object_set_new(rep, "ok", json_true());
    init_client_send(r->st, r->c, rep, fds, nfds);
    json_decref(rep);
}

/* Reads an optional integer field within [lo, hi]; absent leaves *out alone. */
static int get_int(struct req *r, const char *key, long long lo, long long hi, long long *out)
{
    json_t *v = json_object_get(r->msg, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        reply_err(r, EINVAL, "bad request: %s must be an integer in [%lld, %lld]", key, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_bool(struct req *r, const char *key, bool *out)
{
    json_t *v = json_object_get(r->msg, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        reply_err(r, EINVAL, "bad request: %s must be a boolean", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* The process a request names by "pid", which must be a live spawned child. */
static struct proc *get_proc(struct req *r)
{
    long long pid = 0;
    if (!json_object_get(r->msg, "pid")) {
        reply_err(r, EINVAL, "bad request: pid is required");
        return NULL;
    }
    if (get_int(r, "pid", 1, INT32_MAX, &pid) < 0)
        return NULL;
    struct proc *p = init_proc_find(r->st, (pid_t)pid);
    if (!p)
        reply_err(r, ESRCH, "no spawned process with pid %lld", pid);
    return p;
}

static void op_ping(struct req *r)
{
    json_t *b = json_pack("{s:I, s:I, s:I, s:i}", "pid", (json_int_t)getpid(), "uptime_ms",
                          (json_int_t)(init_mono_ms() - r->st->start_mono_ms), "children",
                          (json_int_t)r->st->nprocs, "version", AT_INITWIRE_VERSION);
    reply_ok(r, b, NULL, 0);
}

/* Fills a NULL-terminated vector from a JSON array of strings (pointers into the
 * request, which outlives the spawn). extra leaves room for entries the caller adds. */
static char **str_vector(struct req *r, const char *key, json_t *arr, size_t extra)
{
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n > INIT_MAX_ARGS) {
        reply_err(r, EINVAL, "bad request: %s must be an array of at most %d strings", key,
                  INIT_MAX_ARGS);
        return NULL;
    }
    char **v = calloc(n + extra + 1, sizeof *v);
    if (!v) {
        reply_err(r, ENOMEM, "spawn: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s || strlen(s) != json_string_length(json_array_get(arr, i))) {
            reply_err(r, EINVAL, "bad request: %s[%zu] must be a string without NUL", key, i);
            free(v);
            return NULL;
        }
        v[i] = (char *)s;
    }
    return v;
}

static bool has_term(char **envp)
{
    for (; *envp; envp++)
        if (strncmp(*envp, "TERM=", 5) == 0)
            return true;
    return false;
}

/* Parses a spawn request into sr; on failure the error reply has been sent. The caller
 * frees sr->argv and sr->envp (the vectors, not the strings). */
static int parse_spawn(struct req *r, struct spawn_req *sr)
{
    long long cols = 80, rows = 24;
    memset(sr, 0, sizeof *sr);
    sr->cwd = r->st->workdir;
    if (get_bool(r, "pty", &sr->pty) < 0 || get_int(r, "cols", 1, 10000, &cols) < 0 ||
        get_int(r, "rows", 1, 10000, &rows) < 0)
        return -1;
    sr->cols = (unsigned short)cols;
    sr->rows = (unsigned short)rows;
    json_t *cwd = json_object_get(r->msg, "cwd");
    if (cwd && !json_is_string(cwd)) {
        reply_err(r, EINVAL, "bad request: cwd must be a string");
        return -1;
    }
    if (cwd)
        sr->cwd = json_string_value(cwd);
    sr->argv = str_vector(r, "argv", json_object_get(r->msg, "argv"), 0);
    if (!sr->argv)
        return -1;
    if (!sr->argv[0] || !sr->argv[0][0]) {
        reply_err(r, EINVAL, "bad request: argv must name a program");
        return -1;
    }
    json_t *env = json_object_get(r->msg, "env");
    if (env) {
        sr->envp = str_vector(r, "env", env, 1);
        if (!sr->envp)
            return -1;
        for (char **e = sr->envp; *e; e++) {
            if (!strchr(*e, '=')) {
                reply_err(r, EINVAL, "bad request: env entry '%.64s' is not K=V", *e);
                return -1;
            }
        }
        if (sr->pty && !has_term(sr->envp))
            sr->envp[json_array_size(env)] = DEFAULT_TERM;
    }
    return 0;
}

/* The descriptors of a live child, in the order spawn hands them out, with their names
 * (so a re-attaching client knows which it got after close_stdin). */
static int proc_fds(const struct proc *p, int fds[AT_INITWIRE_MAX_FDS], json_t **names)
{
    static const char *const pipe_names[] = {"stdin", "stdout", "stderr"};
    int n = 0;
    *names = json_array();
    for (int i = 0; i < p->nfds; i++) {
        if (p->fds[i] < 0)
            continue;
        fds[n++] = p->fds[i];
        json_array_append_new(*names, json_string(p->pty ? "pty" : pipe_names[i]));
    }
    return n;
}

static void reply_fds(struct req *r, const struct proc *p)
{
    int fds[AT_INITWIRE_MAX_FDS];
    json_t *names;
    int n = proc_fds(p, fds, &names);
    json_t *b =
        json_pack("{s:I, s:b, s:o}", "pid", (json_int_t)p->pid, "pty", p->pty, "fds", names);
    reply_ok(r, b, fds, n);
}

static void op_spawn(struct req *r)
{
    struct spawn_req sr;
    if (parse_spawn(r, &sr) == 0) {
        char err[512];
        int err_no;
        struct proc *p = init_proc_spawn(r->st, &sr, err, sizeof err, &err_no);
        if (p) {
            init_log("info", "event=spawn pid=%d argv0=%s pty=%d", (int)p->pid, p->argv0,
                     (int)p->pty);
            reply_fds(r, p);
        } else {
            reply_err(r, err_no, "%s", err);
        }
    }
    free(sr.argv);
    free(sr.envp);
}

static void op_attach(struct req *r)
{
    struct proc *p = get_proc(r);
    if (p)
        reply_fds(r, p);
}

static void op_close_stdin(struct req *r)
{
    struct proc *p = get_proc(r);
    if (!p)
        return;
    if (init_proc_close_stdin(p) < 0)
        reply_err(r, errno, "close_stdin %d: %s", (int)p->pid,
                  p->pty ? "a pty child has no separate stdin" : "already closed");
    else
        reply_ok(r, NULL, NULL, 0);
}

/* Signals any process of the sandbox (not only spawned ones: a manager may stop what a
 * shell started), or its whole process group. Never init itself or group 1, which holds
 * init and everything that did not make its own. */
static void op_signal(struct req *r)
{
    long long pid = 0, sig = 0;
    bool group = false;
    if (!json_object_get(r->msg, "pid") || !json_object_get(r->msg, "sig")) {
        reply_err(r, EINVAL, "bad request: pid and sig are required");
        return;
    }
    if (get_int(r, "pid", 2, INT32_MAX, &pid) < 0 || get_int(r, "sig", 0, SIGRTMAX, &sig) < 0 ||
        get_bool(r, "group", &group) < 0)
        return;
    pid_t target = (pid_t)pid;
    if (group) {
        pid_t pgid = getpgid(target);
        if (pgid < 0) {
            reply_err(r, errno, "signal: getpgid %lld: %s", pid, strerror(errno));
            return;
        }
        if (pgid <= 1) {
            reply_err(r, EPERM, "signal: process %lld is in init's process group", pid);
            return;
        }
        target = -pgid;
    }
    if (kill(target, (int)sig) < 0)
        reply_err(r, errno, "signal %lld to %d: %s", sig, (int)target, strerror(errno));
    else
        reply_ok(r, NULL, NULL, 0);
}

static void op_list(struct req *r)
{
    json_t *procs = json_array();
    for (size_t i = 0; i < r->st->nprocs; i++) {
        const struct proc *p = &r->st->procs[i];
        json_array_append_new(procs, json_pack("{s:I, s:s, s:b, s:I}", "pid", (json_int_t)p->pid,
                                               "argv0", p->argv0, "pty", p->pty, "started_ms",
                                               (json_int_t)p->started_ms));
    }
    reply_ok(r, json_pack("{s:o}", "procs", procs), NULL, 0);
}

/* Exit records are kept until acknowledged ("ack": the last seq the client has made
 * durable), so a manager that dies between reading and recording them reads them again. */
static void op_exits(struct req *r)
{
    long long ack = 0;
    if (get_int(r, "ack", 0, INT64_MAX, &ack) < 0)
        return;
    init_exits_ack(r->st, (uint64_t)ack);
    json_t *list = json_array();
    const struct exit_rec *e;
    size_t i = 0;
    for (; i < INIT_EXITS_PER_REPLY && (e = init_exits_at(r->st, i)); i++)
        json_array_append_new(list,
                              json_pack("{s:I, s:I, s:i, s:i, s:I}", "seq", (json_int_t)e->seq,
                                        "pid", (json_int_t)e->pid, "code", e->code, "signal",
                                        e->signal, "ended_ms", (json_int_t)e->ended_ms));
    json_t *b =
        json_pack("{s:o, s:I, s:b, s:I}", "exits", list, "dropped", (json_int_t)r->st->exit_dropped,
                  "more", init_exits_at(r->st, i) != NULL, "last_seq", (json_int_t)r->st->exit_seq);
    reply_ok(r, b, NULL, 0);
}

static void op_shutdown(struct req *r)
{
    long long grace = DEFAULT_SHUTDOWN_GRACE_MS;
    if (get_int(r, "grace_ms", 0, INIT_SHUTDOWN_MAX_GRACE_MS, &grace) < 0)
        return;
    init_log("info", "event=shutdown grace_ms=%lld children=%zu", grace, r->st->nprocs);
    init_proc_kill_all(r->st, (int)grace);
    r->st->done = true;
    reply_ok(r, NULL, NULL, 0);
}

static const struct {
    const char *name;
    void (*fn)(struct req *r);
} ops[] = {
    {"ping", op_ping},         {"spawn", op_spawn},
    {"attach", op_attach},     {"signal", op_signal},
    {"list", op_list},         {"exits", op_exits},
    {"shutdown", op_shutdown}, {"close_stdin", op_close_stdin},
};

void init_handle_request(struct init_state *st, struct client *c, json_t *msg)
{
    struct req r = {.st = st, .c = c, .msg = msg, .id = json_null()};
    if (!json_is_object(msg)) {
        reply_err(&r, EINVAL, "bad request: not a JSON object");
        return;
    }
    json_t *id = json_object_get(msg, "id");
    if (!json_is_integer(id) && !json_is_string(id)) {
        reply_err(&r, EINVAL, "bad request: id must be an integer or a string");
        return;
    }
    r.id = id;
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (!op) {
        reply_err(&r, EINVAL, "bad request: op is required");
        return;
    }
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(ops[i].name, op) == 0) {
            ops[i].fn(&r);
            return;
        }
    }
    reply_err(&r, EINVAL, "unknown op '%.32s'", op);
}
