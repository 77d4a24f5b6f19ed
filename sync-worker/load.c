/*
 * The `load` job: bring a workspace volume up to date with its rows in
 * PostgreSQL, as one tar stream through atelier-extract (ARCHITECTURE.md,
 * data path 1). args: {"workspace_id", "root": mounted volume dir under
 * WORKSPACE_BASE_PATH, "uid"?, "gid"? (owner inside the sandbox),
 * "session"? (then a `loaded` job tells the session-manager)}.
 *
 * The loop never waits: rows come in pages of at most PAGE_BYTES of content
 * (keyset by path, so folders precede what they hold), libarchive turns
 * each page into tar bytes in memory, and the bytes go to the extractor's
 * stdin as the pipe takes them; the next page is read only when the last
 * one has drained. Result: {"files", "folders", "bytes", "ms"}.
 */
#include "load.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/queue.h"
#include "atelier/util.h"

#define PAGE_ROWS 1000
#define PAGE_BYTES (4 << 20) /* content per page; a page holds at least one row */
#define OUT_MAX 4096         /* the extractor's one-line answer */

extern char **environ;

typedef struct load {
    at_job_ctx_t *ctx;
    at_worker_t *w;
    char ws[AT_UUID_LEN + 1];
    char session[AT_JOB_SESSION_MAX + 1];
    char root[PATH_MAX];
    char after[4200]; /* last path written (keyset) */
    pid_t pid;
    int in_fd, out_fd;
    at_io_watch_t *in_w, *out_w;
    at_io_timer_t *reap;
    struct archive *ar;
    char *buf; /* tar bytes not yet written to the pipe */
    size_t len, off, cap;
    int last_page, closed_in, out_eof, reaped, status;
    char out[OUT_MAX];
    size_t outlen;
    int64_t start_us;
    int64_t start_wall_ms;
    json_t *result; /* the job's, while the rows are marked */
} load_t;

static void fetch_page(load_t *l);

static void load_free(load_t *l)
{
    if (l->ar)
        archive_write_free(l->ar);
    at_io_watch_free(l->in_w);
    at_io_watch_free(l->out_w);
    at_io_timer_free(l->reap);
    if (l->in_fd >= 0)
        close(l->in_fd);
    if (l->out_fd >= 0)
        close(l->out_fd);
    if (l->pid > 0 && !l->reaped) {
        kill(l->pid, SIGKILL);
        waitpid(l->pid, NULL, 0); /* it was just killed: returns at once */
    }
    free(l->buf);
    json_decref(l->result);
    free(l);
}

static void finish_fail(load_t *l, int permanent, const char *what)
{
    at_job_fail(l->ctx, permanent, "load %s: %s", l->ws, what);
    load_free(l);
}

/* libarchive's output: append to the pending buffer. */
static la_ssize_t tar_write(struct archive *a, void *arg, const void *data, size_t n)
{
    (void)a;
    load_t *l = arg;
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 65536;
        while (cap < l->len + n)
            cap *= 2;
        char *b = realloc(l->buf, cap);
        if (!b)
            return -1;
        l->buf = b;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, data, n);
    l->len += n;
    return (la_ssize_t)n;
}

/* ---- the extractor process ---------------------------------------------- */

static int spawn_extractor(load_t *l, long uid, long gid)
{
    char exe[PATH_MAX], bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    snprintf(bin, sizeof bin, "%s/atelier-extract", dirname(exe));
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    char su[24], sg[24];
    snprintf(su, sizeof su, "%ld", uid);
    snprintf(sg, sizeof sg, "%ld", gid);
    char *argv[] = {bin, "--root", l->root, "--uid", su, "--gid", sg, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int rc = posix_spawn(&l->pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        errno = rc;
        return -1;
    }
    l->in_fd = in[1];
    l->out_fd = out[0];
    fcntl(l->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(l->out_fd, F_SETFL, O_NONBLOCK);
    return 0;
}

static void marked(PGresult *res, const char *err, void *arg)
{
    (void)res;
    load_t *l = arg;
    json_t *r = l->result;
    l->result = NULL;
    if (err) /* only a later conflict copy is at stake: the watcher compares by content */
        at_warn("event=load_mark_failed workspace=%s error=\"%s\"", l->ws, err);
    if (l->session[0]) {
        /* the session-manager owns the status: tell it the files are there */
        at_job_t next;
        if (at_job_init(&next, "loaded", l->session, NULL, r) == AT_OK) {
            at_queue_push(at_worker_redis(l->w), at_queue_stream("session"), &next,
                          at_worker_config(l->w)->queue_maxlen, NULL, NULL);
            at_job_clear(&next);
        }
    }
    at_info("event=load_done workspace=%s root=%s result=%s", l->ws, l->root, l->out);
    at_job_done(l->ctx, r);
    l->ctx = NULL;
    load_free(l);
}

static void try_finish(load_t *l)
{
    if (!l->out_eof || !l->reaped)
        return;
    l->out[l->outlen] = '\0';
    json_t *res = json_loads(l->out, 0, NULL);
    const char *err = json_string_value(json_object_get(res, "error"));
    if (!res || err || !WIFEXITED(l->status) || WEXITSTATUS(l->status) != 0) {
        char why[600];
        snprintf(why, sizeof why, "extract: %.500s", err ? err : l->outlen ? l->out : "no answer");
        json_decref(res);
        finish_fail(l, err != NULL, why);
        return;
    }
    json_object_set_new(res, "ms", json_real((double)(at_mono_us() - l->start_us) / 1000.0));
    l->result = res;
    /* the volume now holds what the rows held when the load began: say so
     * (file sync's disk_sha256), then tell the session-manager */
    char since[24];
    snprintf(since, sizeof since, "%lld", (long long)l->start_wall_ms);
    const char *prm[] = {l->ws, since};
    if (at_db_query(at_worker_db(l->w),
                    "UPDATE workspace_items SET disk_sha256 = sha256 WHERE workspace_id = $1::uuid "
                    "AND type = 'file' AND updated_at <= to_timestamp($2::bigint / 1000.0) "
                    "AND disk_sha256 IS DISTINCT FROM sha256",
                    2, prm, marked, l) != AT_OK)
        marked(NULL, "database busy", l);
}

static void on_reap(void *arg)
{
    load_t *l = arg;
    if (waitpid(l->pid, &l->status, WNOHANG) == l->pid) {
        l->reaped = 1;
        at_io_timer_stop(l->reap);
        try_finish(l);
    }
}

static void on_out(int fd, int events, void *arg)
{
    (void)events;
    load_t *l = arg;
    for (;;) {
        ssize_t n = read(fd, l->out + l->outlen, sizeof l->out - 1 - l->outlen);
        if (n > 0) {
            l->outlen += (size_t)n;
            if (l->outlen < sizeof l->out - 1)
                continue;
        }
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EOF, error, or a full answer buffer */
    }
    l->out_eof = 1;
    at_io_watch_set(l->out_w, 0);
    at_io_timer_start(l->reap, 1, 5); /* reaped within ms of closing its stdout */
}

/* ---- rows -> tar -> pipe ------------------------------------------------ */

static void on_in(int fd, int events, void *arg)
{
    (void)events;
    load_t *l = arg;
    while (l->off < l->len) {
        ssize_t n = write(fd, l->buf + l->off, l->len - l->off);
        if (n > 0) {
            l->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        /* the extractor stopped reading: its answer says why */
        at_io_watch_set(l->in_w, 0);
        close(l->in_fd);
        l->in_fd = -1;
        l->closed_in = 1;
        return;
    }
    l->off = l->len = 0;
    at_io_watch_set(l->in_w, 0);
    if (l->last_page) {
        close(l->in_fd);
        l->in_fd = -1;
        l->closed_in = 1;
    } else {
        fetch_page(l);
    }
}

static int add_row(load_t *l, PGresult *res, int r)
{
    const char *path = PQgetvalue(res, r, 0);
    int folder = !strcmp(PQgetvalue(res, r, 1), "folder");
    size_t size = 0;
    unsigned char *bin = NULL;
    const char *data = NULL;
    if (!folder) {
        if (!PQgetisnull(res, r, 3)) {
            data = PQgetvalue(res, r, 3);
            size = (size_t)PQgetlength(res, r, 3);
        } else if (!PQgetisnull(res, r, 4)) {
            bin = PQunescapeBytea((const unsigned char *)PQgetvalue(res, r, 4), &size);
            if (!bin)
                return -1;
            data = (const char *)bin;
        }
    }
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname_utf8(e, path); /* rows are UTF-8, whatever the locale */
    archive_entry_set_filetype(e, folder ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, folder ? 0755 : (mode_t)(atoi(PQgetvalue(res, r, 2)) & 0777));
    archive_entry_set_size(e, folder ? 0 : (la_int64_t)size);
    archive_entry_set_mtime(e, (time_t)strtoll(PQgetvalue(res, r, 5), NULL, 10), 0);
    int ok = archive_write_header(l->ar, e) == ARCHIVE_OK &&
             (folder || size == 0 || archive_write_data(l->ar, data, size) == (la_ssize_t)size);
    archive_entry_free(e);
    PQfreemem(bin);
    return ok ? 0 : -1;
}

static void page_done(PGresult *res, const char *err, void *arg)
{
    load_t *l = arg;
    if (err) {
        finish_fail(l, 0, err);
        return;
    }
    int n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        if (add_row(l, res, r) != 0) {
            finish_fail(l, 0, archive_error_string(l->ar));
            return;
        }
    }
    if (n > 0)
        at_strlcpy(l->after, PQgetvalue(res, n - 1, 0), sizeof l->after);
    if (n == 0 || !strcmp(PQgetvalue(res, n - 1, 6), "t")) {
        l->last_page = 1;
        if (archive_write_close(l->ar) != ARCHIVE_OK) {
            finish_fail(l, 0, archive_error_string(l->ar));
            return;
        }
    }
    at_io_watch_set(l->in_w, AT_IO_WRITE);
}

/* Rows after l->after, up to PAGE_BYTES of content (at least one row);
 * column 6 says whether this is the last page. */
static void fetch_page(load_t *l)
{
    static const char sql[] =
        "WITH r AS (SELECT path, type, mode, content, content_bin, "
        "  extract(epoch FROM updated_at)::bigint AS mtime, "
        "  sum(size) OVER (ORDER BY path COLLATE \"C\") - size AS before "
        "  FROM workspace_items WHERE workspace_id = $1::uuid AND path COLLATE \"C\" > $2 "
        "  ORDER BY path COLLATE \"C\" LIMIT " AT_STR(
            PAGE_ROWS) ") "
                       "SELECT path, type, mode, content, content_bin, mtime, "
                       "  (SELECT count(*) FROM r) < " AT_STR(
                           PAGE_ROWS) " AND "
                                      "  NOT EXISTS (SELECT 1 FROM r WHERE before >= " AT_STR(
                                          PAGE_BYTES) " AND before > 0) "
                                                      "FROM r WHERE before < " AT_STR(
                                                          PAGE_BYTES) " OR before = 0 "
                                                                      "ORDER BY path COLLATE \"C\"";
    const char *p[] = {l->ws, l->after};
    if (at_db_query(at_worker_db(l->w), sql, 2, p, page_done, l) != AT_OK)
        finish_fail(l, 0, "database busy");
}

/* ---- the handler -------------------------------------------------------- */

/* root must be an existing directory strictly below WORKSPACE_BASE_PATH. */
static int root_ok(const at_config_t *cfg, const char *root, char out[PATH_MAX])
{
    char base[PATH_MAX];
    if (!root || root[0] != '/' || !realpath(cfg->workspace_base_path, base) ||
        !realpath(root, out))
        return 0;
    size_t n = strlen(base);
    return !strncmp(out, base, n) && out[n] == '/' && out[n + 1] != '\0';
}

void handle_load(at_job_ctx_t *ctx)
{
    json_t *args = at_job_ctx_args(ctx);
    at_worker_t *w = at_job_ctx_worker(ctx);
    const char *ws = json_string_value(json_object_get(args, "workspace_id"));
    const char *root = json_string_value(json_object_get(args, "root"));
    json_t *uid = json_object_get(args, "uid"), *gid = json_object_get(args, "gid");
    if (!ws || !at_is_uuid(ws)) {
        at_job_fail(ctx, 1, "load: workspace_id must be a uuid");
        return;
    }
    load_t *l = calloc(1, sizeof *l);
    if (!l) {
        at_job_fail(ctx, 0, "load: out of memory");
        return;
    }
    l->ctx = ctx;
    l->w = w;
    l->in_fd = l->out_fd = -1;
    l->start_us = at_mono_us();
    l->start_wall_ms = at_wall_ms() - 1000; /* a second of slack for the database's clock */
    at_strlcpy(l->ws, ws, sizeof l->ws);
    at_strlcpy(l->session, at_job_ctx_job(ctx)->session, sizeof l->session);
    if (!root_ok(at_worker_config(w), root, l->root)) {
        finish_fail(l, 1, "root is not a directory under WORKSPACE_BASE_PATH");
        return;
    }
    if (spawn_extractor(l, uid ? (long)json_integer_value(uid) : -1,
                        gid ? (long)json_integer_value(gid) : -1) != 0) {
        finish_fail(l, 0, strerror(errno));
        return;
    }
    l->ar = archive_write_new();
    archive_write_set_format_pax_restricted(l->ar);
    archive_write_set_bytes_in_last_block(l->ar, 1);
    l->in_w = at_io_watch_new(at_worker_io(w), l->in_fd, on_in, l);
    l->out_w = at_io_watch_new(at_worker_io(w), l->out_fd, on_out, l);
    l->reap = at_io_timer_new(at_worker_io(w), on_reap, l);
    if (!l->ar || !l->in_w || !l->out_w || !l->reap ||
        archive_write_open2(l->ar, l, NULL, tar_write, NULL, NULL) != ARCHIVE_OK) {
        finish_fail(l, 0, "cannot set up the tar stream");
        return;
    }
    at_io_watch_set(l->out_w, AT_IO_READ);
    fetch_page(l);
}
