/* atelier-init internals: the state the loop (init.c), the request handlers
 * (init_ops.c), the connections (init_client.c) and the process table (init_proc.c)
 * share. Not a public API: the session-manager talks to init through initctl.h only. */
#ifndef ATELIER_INIT_H
#define ATELIER_INIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <jansson.h>

#include "init_wire.h"

/* Limits: every table is fixed-size, so init's memory does not grow with what the
 * sandbox does. */
#define INIT_MAX_CLIENTS 4       /* manager connections at once */
#define INIT_MAX_PROCS 256       /* live children started by "spawn" */
#define INIT_EXIT_RING 1024      /* exit records kept until acknowledged */
#define INIT_EXITS_PER_REPLY 256 /* records per "exits" reply (keeps it under 64 KiB) */
#define INIT_OUTQ_MAX 128        /* replies/events queued for a client that is not reading */
#define INIT_OUTQ_MAX_BYTES (1 << 20)
#define INIT_MAX_ARGS 1024 /* argv and env entries of one spawn */
#define INIT_ARGV0_MAX 64  /* argv[0] as "list" shows it */
#define INIT_SHUTDOWN_MAX_GRACE_MS 60000

/* A message waiting for its client to become writable. */
struct outmsg {
    char *buf;
    size_t len;
    int fds[AT_INITWIRE_MAX_FDS];
    int nfds;
};

struct client {
    int fd; /* -1: free slot */
    struct outmsg q[INIT_OUTQ_MAX];
    size_t qhead, qlen, qbytes;
};

/* A live child started by "spawn". fds are init's own copies of what was handed out:
 * pty: {master}; pipes: {stdin write end (-1 once closed), stdout read, stderr read}. */
struct proc {
    pid_t pid;
    bool pty;
    int fds[AT_INITWIRE_MAX_FDS];
    int nfds;
    char argv0[INIT_ARGV0_MAX];
    int64_t started_ms; /* wall clock, ms since the epoch */
};

struct exit_rec {
    uint64_t seq; /* 1, 2, ... in reaping order */
    pid_t pid;
    int code;   /* exit status, or 128 + signal when killed (the shell's convention) */
    int signal; /* 0 unless killed by a signal */
    int64_t ended_ms;
};

struct init_state {
    int epfd, listen_fd, sig_fd;
    const char *socket_path; /* unlinked at shutdown when init created it; else NULL */
    const char *workdir;
    int64_t start_mono_ms;
    struct rlimit nofile_orig; /* restored in every child */
    struct client clients[INIT_MAX_CLIENTS];
    struct proc procs[INIT_MAX_PROCS];
    size_t nprocs;
    struct exit_rec exits[INIT_EXIT_RING];
    size_t exit_head, exit_len;
    uint64_t exit_seq;     /* seq of the last record made */
    uint64_t exit_dropped; /* records overwritten before being acknowledged */
    bool done;             /* set by "shutdown": the loop ends after the reply */
};

/* init.c: logging, one "level=... proc=atelier-init key=value" line to stderr. */
void init_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t init_mono_ms(void);
int64_t init_wall_ms(void);

/* init_client.c: the connections. */
void init_accept_clients(struct init_state *st);
/* Reads and answers the requests client c has sent (a bounded number per call). */
void init_client_read(struct init_state *st, struct client *c);
/* Sends what is queued for c until its socket is full; -1 when c had to be closed. */
int init_client_flush(struct init_state *st, struct client *c, int flags);
/* After "shutdown": a short, bounded wait for every client to take its replies. */
void init_clients_final_flush(struct init_state *st);
/* Queues (or sends) msg to client c; the message's fds are dup'ed, the caller
 * keeps its own. Drops the client when its queue is over its limits. */
void init_client_send(struct init_state *st, struct client *c, const json_t *msg, const int *fds,
                      int nfds);
/* Sends msg to every connected client. */
void init_broadcast(struct init_state *st, const json_t *msg);

/* init_ops.c: answers one request (an already parsed JSON value) from client c. */
void init_handle_request(struct init_state *st, struct client *c, json_t *req);

/* init_proc.c: the process table. */
struct spawn_req {
    char **argv; /* NULL-terminated, at least one entry */
    char **envp; /* NULL-terminated, or NULL to inherit init's environment */
    const char *cwd;
    bool pty;
    unsigned short cols, rows;
};

/* Starts a child as the request says and adds it to the table. Returns it, or NULL with
 * the reason in err ("exec nosuch: No such file or directory") and *err_no set. */
struct proc *init_proc_spawn(struct init_state *st, const struct spawn_req *r, char *err,
                             size_t errlen, int *err_no);
struct proc *init_proc_find(struct init_state *st, pid_t pid);
/* Closes init's copy of a pipe child's stdin, so the child sees end of file. */
int init_proc_close_stdin(struct proc *p);
/* Reaps every child that has ended (spawned ones and orphans), records and announces the
 * spawned ones. Returns how many processes were reaped. */
int init_proc_reap(struct init_state *st);
/* Drops exit records with seq <= ack. */
void init_exits_ack(struct init_state *st, uint64_t ack);
/* The i-th unacknowledged record (0 = oldest). */
const struct exit_rec *init_exits_at(const struct init_state *st, size_t i);
/* SIGTERM to every process in the sandbox, SIGKILL to what is left after grace_ms,
 * everything reaped. Blocks. */
void init_proc_kill_all(struct init_state *st, int grace_ms);

#endif
