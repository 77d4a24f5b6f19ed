/* atelier-init's connections: accepting managers (and refusing everyone else), reading
 * their requests, and sending replies and events without ever blocking PID 1: what a
 * socket cannot take now waits in a bounded per-client queue. */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Messages a client may send before init answers another client (fairness). */
#define REQUESTS_PER_WAKEUP 32
/* How long the final flush after "shutdown" may wait for a slow client. */
#define SHUTDOWN_FLUSH_MS 1000

static char g_msgbuf[AT_INITWIRE_MAX_MSG]; /* one request or reply at a time */

static void outmsg_free(struct outmsg *m)
{
    free(m->buf);
    for (int i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    memset(m, 0, sizeof *m);
}

static void client_close(struct init_state *st, struct client *c, const char *why)
{
    if (c->fd < 0)
        return;
    init_log("info", "event=client_closed slot=%d reason=\"%s\"", (int)(c - st->clients), why);
    epoll_ctl(st->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    while (c->qlen > 0) {
        outmsg_free(&c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % INIT_OUTQ_MAX;
        c->qlen--;
    }
    c->qhead = c->qbytes = 0;
}

static void client_want_out(struct init_state *st, struct client *c, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)(c - st->clients)};
    epoll_ctl(st->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what is queued, in order, until the socket is full. Returns -1 when the client
 * had to be closed. */
int init_client_flush(struct init_state *st, struct client *c, int flags)
{
    while (c->qlen > 0) {
        struct outmsg *m = &c->q[c->qhead];
        if (at_initwire_send(c->fd, m->buf, m->len, m->fds, m->nfds, flags) < 0) {
            if (errno == EAGAIN)
                return 0;
            client_close(st, c, strerror(errno));
            return -1;
        }
        c->qbytes -= m->len;
        outmsg_free(m);
        c->qhead = (c->qhead + 1) % INIT_OUTQ_MAX;
        c->qlen--;
    }
    client_want_out(st, c, false);
    return 0;
}

/* Keeps a copy of a message the socket could not take now, dup'ing its descriptors
 * (the caller's may be closed before the client reads: a child can be reaped). */
static int client_enqueue(struct client *c, const char *buf, size_t len, const int *fds, int nfds)
{
    if (c->qlen == INIT_OUTQ_MAX || c->qbytes + len > INIT_OUTQ_MAX_BYTES)
        return -1;
    struct outmsg *m = &c->q[(c->qhead + c->qlen) % INIT_OUTQ_MAX];
    m->buf = malloc(len);
    if (!m->buf)
        return -1;
    memcpy(m->buf, buf, len);
    m->len = len;
    for (m->nfds = 0; m->nfds < nfds; m->nfds++) {
        m->fds[m->nfds] = fcntl(fds[m->nfds], F_DUPFD_CLOEXEC, 3);
        if (m->fds[m->nfds] < 0) {
            outmsg_free(m);
            return -1;
        }
    }
    c->qlen++;
    c->qbytes += len;
    return 0;
}

static void client_send_raw(struct init_state *st, struct client *c, const char *buf, size_t len,
                            const int *fds, int nfds)
{
    if (c->fd < 0)
        return;
    if (c->qlen == 0) {
        if (at_initwire_send(c->fd, buf, len, fds, nfds, MSG_DONTWAIT) == 0)
            return;
        if (errno != EAGAIN) {
            client_close(st, c, strerror(errno));
            return;
        }
    }
    /* A client that does not read for INIT_OUTQ_MAX messages is dropped: it can connect
     * again, and exit records wait in the ring until acknowledged. */
    if (client_enqueue(c, buf, len, fds, nfds) < 0) {
        client_close(st, c, "output_queue_full");
        return;
    }
    client_want_out(st, c, true);
}

/* Serializes msg into g_msgbuf; returns its length or 0 if it does not fit. */
static size_t serialize(const json_t *msg)
{
    size_t len = json_dumpb(msg, g_msgbuf, sizeof g_msgbuf, JSON_COMPACT);
    if (len == 0 || len > sizeof g_msgbuf) {
        init_log("error", "event=reply_too_big bytes=%zu max=%d", len, AT_INITWIRE_MAX_MSG);
        return 0;
    }
    return len;
}

void init_client_send(struct init_state *st, struct client *c, const json_t *msg, const int *fds,
                      int nfds)
{
    size_t len = serialize(msg);
    if (len == 0) {
        static const char fallback[] = "{\"ok\":false,\"error\":\"reply too big\"}";
        client_send_raw(st, c, fallback, sizeof fallback - 1, NULL, 0);
        return;
    }
    client_send_raw(st, c, g_msgbuf, len, fds, nfds);
}

void init_broadcast(struct init_state *st, const json_t *msg)
{
    size_t len = serialize(msg);
    for (int i = 0; len > 0 && i < INIT_MAX_CLIENTS; i++)
        client_send_raw(st, &st->clients[i], g_msgbuf, len, NULL, 0);
}

/* Tells a connection init will not serve why, then closes it. */
static void refuse(int fd, int err_no, const char *why)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "{\"event\":\"refused\",\"errno\":%d,\"error\":\"%s\"}",
                     err_no, why);
    at_initwire_send(fd, buf, (size_t)n, NULL, 0, MSG_DONTWAIT);
    close(fd);
}

/* A process inside may try to connect in a loop, and init's log is a file on the host:
 * at most one line per second, with the count of attempts it stands for. */
static void log_inside_refusal(int peer_pid)
{
    static int64_t last_ms = -1000000;
    static unsigned long unlogged;
    int64_t now = init_mono_ms();
    if (now - last_ms < 1000) {
        unlogged++;
        return;
    }
    init_log("warn", "event=client_refused reason=inside_sandbox peer_pid=%d attempts=%lu",
             peer_pid, unlogged + 1);
    last_ms = now;
    unlogged = 0;
}

void init_accept_clients(struct init_state *st)
{
    for (;;) {
        int fd = accept4(st->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                init_log("warn", "event=accept_failed error=\"%s\"", strerror(errno));
            if (errno == EINTR)
                continue;
            return;
        }
        struct ucred cred;
        socklen_t clen = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.pid != 0) {
            /* A peer we can see is inside the sandbox (pid != 0 in our namespace). */
            log_inside_refusal((int)cred.pid);
            refuse(fd, EPERM, "permission denied: peer is inside the sandbox");
            continue;
        }
        struct client *c = NULL;
        for (int i = 0; i < INIT_MAX_CLIENTS && !c; i++)
            if (st->clients[i].fd < 0)
                c = &st->clients[i];
        if (!c) {
            init_log("warn", "event=client_refused reason=too_many max=%d", INIT_MAX_CLIENTS);
            refuse(fd, EBUSY, "too many clients");
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(c - st->clients)};
        if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            init_log("error", "event=epoll_add_failed error=\"%s\"", strerror(errno));
            close(fd);
            c->fd = -1;
            continue;
        }
        init_log("info", "event=client_accepted slot=%d", (int)(c - st->clients));
        json_t *hello = json_pack("{s:s, s:i, s:I}", "event", "hello", "version",
                                  AT_INITWIRE_VERSION, "pid", (json_int_t)getpid());
        if (hello)
            init_client_send(st, c, hello, NULL, 0);
        json_decref(hello);
    }
}

/* Reads and answers up to REQUESTS_PER_WAKEUP requests from one client. */
void init_client_read(struct init_state *st, struct client *c)
{
    for (int i = 0; i < REQUESTS_PER_WAKEUP && c->fd >= 0 && !st->done; i++) {
        int nfds;
        ssize_t n =
            at_initwire_recv(c->fd, g_msgbuf, sizeof g_msgbuf, NULL, 0, &nfds, MSG_DONTWAIT);
        if (n == 0) {
            client_close(st, c, "eof");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EMSGSIZE) {
                static const char big[] =
                    "{\"id\":null,\"ok\":false,\"errno\":90,\"error\":\"request too big\"}";
                client_send_raw(st, c, big, sizeof big - 1, NULL, 0);
                continue;
            }
            client_close(st, c, strerror(errno));
            return;
        }
        json_error_t jerr;
        json_t *req = json_loadb(g_msgbuf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
        if (!req) {
            json_t *rep = json_pack("{s:n, s:b, s:i, s:s+}", "id", "ok", 0, "errno", EINVAL,
                                    "error", "bad request: invalid JSON: ", jerr.text);
            if (rep)
                init_client_send(st, c, rep, NULL, 0);
            json_decref(rep);
            continue;
        }
        init_handle_request(st, c, req); /* may reuse g_msgbuf for the reply */
        json_decref(req);
    }
}

/* After "shutdown": gives every client a moment to take its queued replies. */
void init_clients_final_flush(struct init_state *st)
{
    int64_t deadline = init_mono_ms() + SHUTDOWN_FLUSH_MS;
    for (int i = 0; i < INIT_MAX_CLIENTS; i++) {
        struct client *c = &st->clients[i];
        while (c->fd >= 0 && c->qlen > 0 && init_mono_ms() < deadline) {
            if (init_client_flush(st, c, MSG_DONTWAIT) < 0)
                break;
            if (c->qlen > 0) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        client_close(st, c, "shutdown");
    }
}
