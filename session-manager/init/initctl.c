/* initctl: blocking client of atelier-init (see initctl.h for the protocol). */
#include "initctl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "init_wire.h"

/* Pause between connection attempts while init is starting. */
#define CONNECT_RETRY_MS 2

struct at_initctl {
    int fd;
    pid_t peer_pid;
    json_int_t next_id;
    json_t *events; /* array of queued events, oldest first */
    char buf[AT_INITWIRE_MAX_MSG];
};

static at_err_t fail(char *err, size_t errlen, at_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static at_err_t fail(char *err, size_t errlen, at_err_t code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* poll(2) timeout left until deadline (-1: none). */
static int left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : (int)left;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Waits until fd is ready for events (POLLIN or POLLOUT) or the deadline passes. */
static at_err_t wait_fd(int fd, short events, int64_t deadline, char *err, size_t errlen)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left_ms(deadline));
        if (n > 0)
            return AT_OK;
        if (n == 0)
            return fail(err, errlen, AT_ETIMEOUT, "initctl: no answer from init in time");
        if (errno != EINTR)
            return fail(err, errlen, AT_EIO, "initctl: poll: %s", strerror(errno));
    }
}

/* Reads one message (a JSON object) before the deadline. Descriptors go to fds (room for
 * AT_INITCTL_MAX_FDS) or are closed when fds is NULL. */
static at_err_t recv_msg(at_initctl_t *c, json_t **msg, int *fds, int *nfds, int64_t deadline,
                         char *err, size_t errlen)
{
    *msg = NULL;
    *nfds = 0;
    ssize_t n;
    for (;;) {
        n = at_initwire_recv(c->fd, c->buf, sizeof c->buf, fds, AT_INITCTL_MAX_FDS, nfds,
                             MSG_DONTWAIT);
        if (n == 0)
            return fail(err, errlen, AT_ECLOSED, "initctl: init closed the connection");
        if (n > 0)
            break;
        if (errno != EAGAIN)
            return fail(err, errlen, errno == ECONNRESET ? AT_ECLOSED : AT_EIO, "initctl: recv: %s",
                        strerror(errno));
        at_err_t rc = wait_fd(c->fd, POLLIN, deadline, err, errlen);
        if (rc != AT_OK)
            return rc;
    }
    json_error_t jerr;
    json_t *j = json_loadb(c->buf, (size_t)n, 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        close_fds(fds, *nfds);
        *nfds = 0;
        return fail(err, errlen, AT_EIO, "initctl: bad message from init: %s",
                    j ? "not an object" : jerr.text);
    }
    *msg = j;
    return AT_OK;
}

/* Keeps an event for at_initctl_read_event, dropping the oldest beyond the limit. */
static void queue_event(at_initctl_t *c, json_t *ev)
{
    if (json_array_size(c->events) >= AT_INITCTL_MAX_QUEUED_EVENTS)
        json_array_remove(c->events, 0);
    json_array_append_new(c->events, ev);
}

/* The first message init sends on a connection: hello, or why it refuses. */
static at_err_t read_hello(at_initctl_t *c, int timeout_ms, char *err, size_t errlen)
{
    json_t *msg;
    int nfds;
    at_err_t rc = recv_msg(c, &msg, NULL, &nfds, deadline_of(timeout_ms), err, errlen);
    if (rc != AT_OK)
        return rc;
    const char *ev = json_string_value(json_object_get(msg, "event"));
    if (ev && strcmp(ev, "hello") == 0) {
        json_decref(msg);
        return AT_OK;
    }
    const char *why = json_string_value(json_object_get(msg, "error"));
    json_int_t e = json_integer_value(json_object_get(msg, "errno"));
    rc = fail(err, errlen, e == EBUSY ? AT_EBUSY : AT_EIO, "initctl: init refused: %s",
              why ? why : "unexpected first message");
    json_decref(msg);
    return rc;
}

at_err_t at_initctl_adopt(int fd, int timeout_ms, at_initctl_t **out, char *err, size_t errlen)
{
    *out = NULL;
    at_initctl_t *c = calloc(1, sizeof *c);
    json_t *events = json_array();
    if (!c || !events) {
        free(c);
        json_decref(events);
        close(fd);
        return fail(err, errlen, AT_ENOMEM, "initctl: out of memory");
    }
    c->fd = fd;
    c->events = events;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        c->peer_pid = cred.pid;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        at_initctl_close(c);
        return fail(err, errlen, AT_EIO, "initctl: fcntl: %s", strerror(errno));
    }
    at_err_t rc = read_hello(c, timeout_ms, err, errlen);
    if (rc != AT_OK) {
        at_initctl_close(c);
        return rc;
    }
    *out = c;
    return AT_OK;
}

at_err_t at_initctl_connect(const char *path, int timeout_ms, at_initctl_t **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return fail(err, errlen, AT_EINVAL, "initctl: socket path too long: %s", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return fail(err, errlen, AT_EIO, "initctl: socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            return at_initctl_adopt(fd, left_ms(deadline), out, err, errlen);
        int e = errno;
        close(fd);
        /* Not there yet, not listening yet, or its backlog is full: init is starting. */
        bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN;
        if (!retry || (deadline >= 0 && now_ms() >= deadline))
            return fail(err, errlen, retry ? AT_ETIMEOUT : AT_EIO, "initctl: connect %s: %s", path,
                        strerror(e));
        sleep_ms(CONNECT_RETRY_MS);
    }
}

void at_initctl_close(at_initctl_t *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    json_decref(c->events);
    free(c);
}

int at_initctl_fd(const at_initctl_t *c)
{
    return c->fd;
}

pid_t at_initctl_peer_pid(const at_initctl_t *c)
{
    return c->peer_pid;
}

static at_err_t send_msg(at_initctl_t *c, const json_t *msg, int64_t deadline, char *err,
                         size_t errlen)
{
    size_t len = json_dumpb(msg, c->buf, sizeof c->buf, JSON_COMPACT);
    if (len == 0 || len > sizeof c->buf)
        return fail(err, errlen, AT_ETOOBIG, "initctl: request of %zu bytes (max %d)", len,
                    AT_INITWIRE_MAX_MSG);
    for (;;) {
        if (at_initwire_send(c->fd, c->buf, len, NULL, 0, MSG_DONTWAIT) == 0)
            return AT_OK;
        if (errno == EPIPE || errno == ECONNRESET)
            return fail(err, errlen, AT_ECLOSED, "initctl: init closed the connection");
        if (errno != EAGAIN)
            return fail(err, errlen, AT_EIO, "initctl: send: %s", strerror(errno));
        at_err_t rc = wait_fd(c->fd, POLLOUT, deadline, err, errlen);
        if (rc != AT_OK)
            return rc;
    }
}

/* Turns an ok:false reply into its error code and message. */
static at_err_t reply_error(const json_t *rep, char *err, size_t errlen)
{
    const char *msg = json_string_value(json_object_get(rep, "error"));
    json_int_t e = json_integer_value(json_object_get(rep, "errno"));
    at_err_t code = (e == ENOENT || e == ESRCH) ? AT_ENOTFOUND : AT_EINVAL;
    return fail(err, errlen, code, "%s", msg ? msg : "init: request failed");
}

at_err_t at_initctl_request(at_initctl_t *c, const json_t *req, json_t **reply, int *fds, int *nfds,
                            int timeout_ms, char *err, size_t errlen)
{
    if (reply)
        *reply = NULL;
    if (nfds)
        *nfds = 0;
    if (!json_is_object(req))
        return fail(err, errlen, AT_EINVAL, "initctl: request must be a JSON object");
    int64_t deadline = deadline_of(timeout_ms);
    json_int_t id = ++c->next_id;
    json_t *msg = json_copy((json_t *)req);
    if (!msg || json_object_set_new(msg, "id", json_integer(id)) < 0) {
        json_decref(msg);
        return fail(err, errlen, AT_ENOMEM, "initctl: out of memory");
    }
    at_err_t rc = send_msg(c, msg, deadline, err, errlen);
    json_decref(msg);
    for (; rc == AT_OK;) {
        json_t *in;
        int got[AT_INITCTL_MAX_FDS], ngot;
        rc = recv_msg(c, &in, got, &ngot, deadline, err, errlen);
        if (rc != AT_OK)
            break;
        if (json_object_get(in, "event")) {
            close_fds(got, ngot);
            queue_event(c, in);
            continue;
        }
        json_t *rid = json_object_get(in, "id");
        if (!json_is_integer(rid) || json_integer_value(rid) != id) {
            /* The late reply of a request that timed out. */
            close_fds(got, ngot);
            json_decref(in);
            continue;
        }
        if (!json_is_true(json_object_get(in, "ok"))) {
            close_fds(got, ngot);
            rc = reply_error(in, err, errlen);
        } else if (fds) {
            memcpy(fds, got, sizeof(int) * (size_t)ngot);
            if (nfds)
                *nfds = ngot;
        } else {
            close_fds(got, ngot);
        }
        if (reply)
            *reply = in;
        else
            json_decref(in);
        return rc;
    }
    return rc;
}

at_err_t at_initctl_read_event(at_initctl_t *c, json_t **event, int timeout_ms, char *err,
                               size_t errlen)
{
    *event = NULL;
    if (json_array_size(c->events) > 0) {
        *event = json_incref(json_array_get(c->events, 0));
        json_array_remove(c->events, 0);
        return AT_OK;
    }
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        json_t *in;
        int nfds;
        at_err_t rc = recv_msg(c, &in, NULL, &nfds, deadline, err, errlen);
        if (rc != AT_OK)
            return rc;
        if (json_object_get(in, "event")) {
            *event = in;
            return AT_OK;
        }
        json_decref(in); /* a late reply nobody waits for */
    }
}

/* ---- typed helpers ------------------------------------------------------------------- */

at_err_t at_initctl_exit_from_json(const json_t *j, at_initctl_exit_t *out)
{
    json_t *pid = json_object_get(j, "pid"), *code = json_object_get(j, "code");
    json_t *sig = json_object_get(j, "signal");
    const char *ev = json_string_value(json_object_get(j, "event"));
    if ((ev && strcmp(ev, "exit") != 0) || !json_is_integer(pid) || !json_is_integer(code) ||
        !json_is_integer(sig))
        return AT_EINVAL;
    out->pid = (pid_t)json_integer_value(pid);
    out->code = (int)json_integer_value(code);
    out->signal = (int)json_integer_value(sig);
    out->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    out->ended_ms = json_integer_value(json_object_get(j, "ended_ms"));
    return AT_OK;
}

/* Sends {"op":op, ...fields} (fields stolen, may be NULL). */
static at_err_t simple_request(at_initctl_t *c, const char *op, json_t *fields, json_t **reply,
                               int *fds, int *nfds, int timeout_ms, char *err, size_t errlen)
{
    json_t *req = fields ? fields : json_object();
    if (!req || json_object_set_new(req, "op", json_string(op)) < 0) {
        json_decref(req);
        return fail(err, errlen, AT_ENOMEM, "initctl: out of memory");
    }
    at_err_t rc = at_initctl_request(c, req, reply, fds, nfds, timeout_ms, err, errlen);
    json_decref(req);
    return rc;
}

at_err_t at_initctl_ping(at_initctl_t *c, at_initctl_ping_t *out, int timeout_ms, char *err,
                         size_t errlen)
{
    json_t *rep;
    at_err_t rc = simple_request(c, "ping", NULL, &rep, NULL, NULL, timeout_ms, err, errlen);
    if (rc == AT_OK && out) {
        out->uptime_ms = json_integer_value(json_object_get(rep, "uptime_ms"));
        out->children = (int)json_integer_value(json_object_get(rep, "children"));
        out->pid = (pid_t)json_integer_value(json_object_get(rep, "pid"));
    }
    json_decref(rep);
    return rc;
}

/* Places received descriptors by the names the reply lists them under. */
static at_err_t place_fds(const json_t *rep, int *got, int ngot, at_initctl_proc_fds_t *out,
                          char *err, size_t errlen)
{
    json_t *names = json_object_get(rep, "fds");
    out->pid = (pid_t)json_integer_value(json_object_get(rep, "pid"));
    out->pty = json_is_true(json_object_get(rep, "pty"));
    for (int i = 0; i < AT_INITCTL_MAX_FDS; i++)
        out->fds[i] = -1;
    if (json_array_size(names) != (size_t)ngot || out->pid <= 0) {
        close_fds(got, ngot);
        return fail(err, errlen, AT_EIO, "initctl: reply lists %zu descriptors, %d attached",
                    json_array_size(names), ngot);
    }
    static const char *const slots[] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < ngot; i++) {
        const char *name = json_string_value(json_array_get(names, (size_t)i));
        int slot = -1;
        for (int s = 0; s < 3 && name; s++)
            if (strcmp(name, slots[s]) == 0 || (s == 0 && strcmp(name, "pty") == 0))
                slot = s;
        if (slot < 0 || out->fds[slot] >= 0) {
            close_fds(got, ngot); /* including those already placed */
            for (int k = 0; k < AT_INITCTL_MAX_FDS; k++)
                out->fds[k] = -1;
            return fail(err, errlen, AT_EIO, "initctl: unexpected descriptor name %s",
                        name ? name : "(none)");
        }
        out->fds[slot] = got[i];
    }
    return AT_OK;
}

static at_err_t fds_request(at_initctl_t *c, const char *op, json_t *fields,
                            at_initctl_proc_fds_t *out, int timeout_ms, char *err, size_t errlen)
{
    json_t *rep;
    int got[AT_INITCTL_MAX_FDS], ngot = 0;
    at_err_t rc = simple_request(c, op, fields, &rep, got, &ngot, timeout_ms, err, errlen);
    if (rc == AT_OK)
        rc = place_fds(rep, got, ngot, out, err, errlen);
    json_decref(rep);
    return rc;
}

/* A NULL-terminated C vector as a JSON array of strings. */
static json_t *str_array(const char *const *v)
{
    json_t *a = json_array();
    for (; a && *v; v++)
        if (json_array_append_new(a, json_string(*v)) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

at_err_t at_initctl_spawn(at_initctl_t *c, const at_initctl_spawn_t *spec,
                          at_initctl_proc_fds_t *out, int timeout_ms, char *err, size_t errlen)
{
    if (!spec->argv || !spec->argv[0])
        return fail(err, errlen, AT_EINVAL, "initctl: spawn needs argv[0]");
    json_t *req =
        json_pack("{s:o, s:b, s:i, s:i}", "argv", str_array(spec->argv), "pty", spec->pty, "cols",
                  spec->cols ? spec->cols : 80, "rows", spec->rows ? spec->rows : 24);
    if (req && spec->env)
        json_object_set_new(req, "env", str_array(spec->env));
    if (req && spec->cwd)
        json_object_set_new(req, "cwd", json_string(spec->cwd));
    if (!req)
        return fail(err, errlen, AT_EINVAL, "initctl: spawn: argv/env/cwd must be UTF-8");
    return fds_request(c, "spawn", req, out, timeout_ms, err, errlen);
}

at_err_t at_initctl_attach(at_initctl_t *c, pid_t pid, at_initctl_proc_fds_t *out, int timeout_ms,
                           char *err, size_t errlen)
{
    return fds_request(c, "attach", json_pack("{s:I}", "pid", (json_int_t)pid), out, timeout_ms,
                       err, errlen);
}

at_err_t at_initctl_close_stdin(at_initctl_t *c, pid_t pid, int timeout_ms, char *err,
                                size_t errlen)
{
    return simple_request(c, "close_stdin", json_pack("{s:I}", "pid", (json_int_t)pid), NULL, NULL,
                          NULL, timeout_ms, err, errlen);
}

at_err_t at_initctl_signal(at_initctl_t *c, pid_t pid, int sig, bool group, int timeout_ms,
                           char *err, size_t errlen)
{
    return simple_request(
        c, "signal",
        json_pack("{s:I, s:i, s:b}", "pid", (json_int_t)pid, "sig", sig, "group", group), NULL,
        NULL, NULL, timeout_ms, err, errlen);
}

at_err_t at_initctl_list(at_initctl_t *c, at_initctl_procinfo_t **out, size_t *n, int timeout_ms,
                         char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    json_t *rep;
    at_err_t rc = simple_request(c, "list", NULL, &rep, NULL, NULL, timeout_ms, err, errlen);
    if (rc != AT_OK) {
        json_decref(rep);
        return rc;
    }
    json_t *procs = json_object_get(rep, "procs");
    size_t count = json_array_size(procs);
    at_initctl_procinfo_t *v = calloc(count ? count : 1, sizeof *v);
    if (!v) {
        json_decref(rep);
        return fail(err, errlen, AT_ENOMEM, "initctl: out of memory");
    }
    for (size_t i = 0; i < count; i++) {
        json_t *p = json_array_get(procs, i);
        const char *argv0 = json_string_value(json_object_get(p, "argv0"));
        v[i].pid = (pid_t)json_integer_value(json_object_get(p, "pid"));
        snprintf(v[i].argv0, sizeof v[i].argv0, "%s", argv0 ? argv0 : "");
        v[i].pty = json_is_true(json_object_get(p, "pty"));
        v[i].started_ms = json_integer_value(json_object_get(p, "started_ms"));
    }
    json_decref(rep);
    *out = v;
    *n = count;
    return AT_OK;
}

at_err_t at_initctl_exits(at_initctl_t *c, uint64_t ack, at_initctl_exit_t **out, size_t *n,
                          bool *more, uint64_t *dropped, int timeout_ms, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    *more = false;
    json_t *rep;
    at_err_t rc = simple_request(c, "exits", json_pack("{s:I}", "ack", (json_int_t)ack), &rep, NULL,
                                 NULL, timeout_ms, err, errlen);
    if (rc != AT_OK) {
        json_decref(rep);
        return rc;
    }
    json_t *list = json_object_get(rep, "exits");
    size_t count = json_array_size(list);
    at_initctl_exit_t *v = calloc(count ? count : 1, sizeof *v);
    if (!v) {
        json_decref(rep);
        return fail(err, errlen, AT_ENOMEM, "initctl: out of memory");
    }
    for (size_t i = 0; i < count && rc == AT_OK; i++)
        if (at_initctl_exit_from_json(json_array_get(list, i), &v[i]) != AT_OK)
            rc = fail(err, errlen, AT_EIO, "initctl: malformed exit record %zu", i);
    *more = json_is_true(json_object_get(rep, "more"));
    if (dropped)
        *dropped = (uint64_t)json_integer_value(json_object_get(rep, "dropped"));
    json_decref(rep);
    if (rc != AT_OK) {
        free(v);
        return rc;
    }
    *out = v;
    *n = count;
    return AT_OK;
}

at_err_t at_initctl_shutdown(at_initctl_t *c, int grace_ms, int timeout_ms, char *err,
                             size_t errlen)
{
    return simple_request(c, "shutdown", json_pack("{s:i}", "grace_ms", grace_ms), NULL, NULL, NULL,
                          timeout_ms, err, errlen);
}
