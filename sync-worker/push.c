/*
 * The `push` job: a path saved, deleted or moved through the API, applied
 * to the volume of a running session (ARCHITECTURE.md, data path 3). args
 * (gateway/files_common.h, PUSH_JOBS): {workspace_id, op: write | delete |
 * move, path, to?, type, version, sha256}.
 *
 * All of it runs on a pool thread, as one critical section under an
 * exclusive flock of the volume's root (the lock the watcher's batches and
 * atelier-extract take too): read the row as it is now, compare with the
 * file, write, record what the volume now holds (disk_sha256). So a late
 * job writes the newest version, never an older one over a newer, and no
 * instance's write falls between another's read and write. The thread has
 * its own blocking PostgreSQL connection for this (the loop's are async).
 *
 * What the row last agreed with on the volume (disk_sha256) decides:
 *
 *   file == row            nothing to write
 *   file == disk_sha256    or absent: the sandbox did not touch it; write
 *   anything else          the sandbox changed it meanwhile: leave it; the
 *                          watcher takes it in and ws_sync_one applies the
 *                          conflict rule (shared/sql/005_sync.sql)
 *
 * Result: {"outcome": written | same | gone | skipped | sandbox_changed |
 * removed | moved | no_workspace, "path"}.
 */
#include "push.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/path.h"
#include "atelier/util.h"
#include "fsops.h"
#include "sync.h"
#include "watch.h"

typedef struct push {
    at_job_ctx_t *ctx; /* NULL: push_local */
    char ws[AT_UUID_LEN + 1];
    char op[8];
    char path[AT_PATH_MAX + 1];
    char to[AT_PATH_MAX + 1];
    char deleted_sha[AT_SHA256_HEX + 1]; /* delete: the version deleted */
    const char *url;                     /* DATABASE_URL */
    /* where the time went (the job's result: queued, pool wait, lock wait, work) */
    int64_t enqueued_ms, handled_us, started_us, locked_us, done_us;
    /* the pool's answer */
    int rc;
    const char *outcome;
    char err[256];
} push_t;

/* ---- the pool thread's database connection ------------------------------------------ */

static pthread_key_t conn_key;
static pthread_once_t conn_once = PTHREAD_ONCE_INIT;

static void conn_close(void *c)
{
    PQfinish(c); /* when the pool's thread ends */
}

static void conn_key_make(void)
{
    pthread_key_create(&conn_key, conn_close);
}

static PGconn *thread_db(const char *url, char *err, size_t cap)
{
    pthread_once(&conn_once, conn_key_make);
    PGconn *c = pthread_getspecific(conn_key);
    if (c && PQstatus(c) == CONNECTION_OK)
        return c;
    if (c)
        PQfinish(c);
    c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, cap, "database: %s", PQerrorMessage(c));
        PQfinish(c);
        c = NULL;
    }
    pthread_setspecific(conn_key, c);
    return c;
}

/* One statement, blocking; NULL with p->err set on failure. */
static PGresult *query(push_t *p, PGconn *db, const char *sql, int n, const char *const *prm)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, prm, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    snprintf(p->err, sizeof p->err, "database: %s", PQerrorMessage(db));
    PQclear(r);
    return NULL;
}

/* ---- on the pool: the critical section ------------------------------------------------ */

/* Write the row's bytes unless the sandbox changed the file since it last
 * agreed with the row; record what the volume holds afterwards. */
static void apply_write(push_t *p, PGconn *db, int root, uid_t uid, gid_t gid)
{
    const char *prm[] = {p->ws, p->path, NULL, NULL};
    PGresult *r = query(p, db,
                        "SELECT type, content, content_bin, sha256, mode, disk_sha256 "
                        "FROM workspace_items WHERE workspace_id = $1::uuid AND path = $2",
                        2, prm);
    if (!r) {
        p->rc = -EAGAIN;
        return;
    }
    if (PQntuples(r) != 1) {
        p->outcome = "gone"; /* deleted since: its delete job follows */
        PQclear(r);
        return;
    }
    if (!strcmp(PQgetvalue(r, 0, 0), "folder")) {
        p->rc = fs_mkdirs(root, p->path, uid, gid);
        p->outcome = "written";
        PQclear(r);
        return;
    }
    const char *sha = PQgetvalue(r, 0, 3), *disk = PQgetvalue(r, 0, 5);
    int has_disk = !PQgetisnull(r, 0, 5);
    fs_file_t now, f = {0};
    struct stat st;
    int rc = fs_hash(root, p->path, &now);
    if (rc == -ELOOP && fs_lstat(root, p->path, &st) == 0 && S_ISLNK(st.st_mode))
        rc = -ENOENT; /* a symlink the sandbox made (never synced): the save replaces it */
    if (rc == 0 && !strcmp(now.sha256, sha)) {
        f = now;
        p->outcome = "same";
    } else if (rc == 0 && (!has_disk || strcmp(now.sha256, disk) != 0)) {
        p->outcome = "sandbox_changed";
    } else if (rc != 0 && rc != -ENOENT) {
        p->rc = rc;
    } else {
        size_t len = 0;
        unsigned char *bin = NULL;
        const void *data = PQgetvalue(r, 0, 1);
        if (!PQgetisnull(r, 0, 1))
            len = (size_t)PQgetlength(r, 0, 1);
        else if (!PQgetisnull(r, 0, 2) &&
                 !(data = bin = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 2), &len)))
            p->rc = -ENOMEM;
        if (!p->rc)
            p->rc = fs_write_atomic(root, p->path, data, len,
                                    (mode_t)(atoi(PQgetvalue(r, 0, 4)) & 07777), uid, gid, &f);
        if (!p->rc)
            watch_own_write(p->ws, p->path, f.size, f.mtime_ns);
        PQfreemem(bin);
        p->outcome = "written";
    }
    if (!p->rc && (!strcmp(p->outcome, "written") || !strcmp(p->outcome, "same"))) {
        char mt[24];
        snprintf(mt, sizeof mt, "%lld", (long long)f.mtime_ns);
        const char *up[] = {p->ws, p->path, f.sha256, mt};
        PGresult *u = query(p, db,
                            "UPDATE workspace_items SET disk_sha256 = $3, disk_mtime_ns = $4 "
                            "WHERE workspace_id = $1::uuid AND path = $2",
                            4, up);
        if (!u) /* the file is right; only its record lags: a rescan mends it */
            at_warn("event=push_record_failed workspace=%s path=%s error=\"%s\"", p->ws, p->path,
                    p->err);
        PQclear(u);
    }
    PQclear(r);
}

static void apply_delete(push_t *p, int root)
{
    fs_file_t now;
    int rc = fs_hash(root, p->path, &now);
    if (rc == -ENOENT) {
        p->outcome = "gone";
    } else if (rc == 0 && p->deleted_sha[0] && strcmp(now.sha256, p->deleted_sha) != 0) {
        p->outcome = "sandbox_changed"; /* an edit there wins over the delete */
    } else if (rc == 0 || rc == -EISDIR) {
        p->rc = fs_remove(root, p->path);
        p->outcome = "removed";
    } else {
        p->rc = rc;
    }
}

static void work(void *arg)
{
    push_t *p = arg;
    p->started_us = at_mono_us();
    PGconn *db = thread_db(p->url, p->err, sizeof p->err);
    if (!db) {
        p->rc = -EAGAIN;
        return;
    }
    const char *prm[] = {p->ws};
    PGresult *r = query(p, db, "SELECT ws_volume_name($1::uuid)", 1, prm);
    char dir[PATH_MAX];
    if (!r) {
        p->rc = -EAGAIN;
        return;
    }
    int found = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) &&
                sync_volume_dir(PQgetvalue(r, 0, 0), dir, sizeof dir) == 0;
    PQclear(r);
    if (!found) {
        p->outcome = "no_workspace";
        return;
    }
    int root = sync_open_volume(dir);
    struct stat st;
    if (root < 0 || fstat(root, &st) != 0) {
        p->outcome = "skipped"; /* not running: the next load brings it */
        if (root >= 0)
            close(root);
        return;
    }
    while (flock(root, LOCK_EX) != 0 && errno == EINTR) {
    }
    p->locked_us = at_mono_us();
    if (!strcmp(p->op, "write")) {
        apply_write(p, db, root, st.st_uid, st.st_gid);
    } else if (!strcmp(p->op, "delete")) {
        apply_delete(p, root);
    } else {
        p->rc = fs_rename(root, p->path, p->to, st.st_uid, st.st_gid);
        if (p->rc == -ENOENT)
            p->rc = 0; /* moved already, or never on the volume */
        p->outcome = "moved";
    }
    close(root); /* and the lock with it */
    p->done_us = at_mono_us();
}

/* ---- on the loop ------------------------------------------------------------------------- */

static void done(void *arg, int ran)
{
    push_t *p = arg;
    const char *why = !ran               ? "worker stopping"
                      : p->rc == -EAGAIN ? p->err
                      : p->rc == -ELOOP || p->rc == -EXDEV
                          ? "a symlink is in the way (not followed)"
                      : p->rc ? strerror(-p->rc)
                              : NULL;
    int permanent = ran && (p->rc == -ELOOP || p->rc == -EXDEV);
    if (why && p->ctx)
        at_job_fail(p->ctx, permanent, "push %s %s: %s", p->op, p->path, why);
    else if (why)
        at_warn("event=push_local_failed workspace=%s path=%s error=\"%s\"", p->ws, p->path, why);
    if (!why && !strcmp(p->outcome, "sandbox_changed"))
        watch_dirty(p->ws, p->path); /* the watcher decides, by the rule */
    if (!why && p->ctx) {
        json_t *r = json_pack("{s:s, s:s}", "outcome", p->outcome, "path", p->path);
        if (p->enqueued_ms > 0) /* the queue's wait crosses machines: wall clocks */
            json_object_set_new(r, "queued_ms",
                                json_real((double)(at_wall_ms() - p->enqueued_ms) -
                                          (double)(at_mono_us() - p->handled_us) / 1000.0));
        if (p->started_us) {
            int64_t locked = p->locked_us ? p->locked_us : p->started_us;
            int64_t end = p->done_us ? p->done_us : locked;
            json_object_set_new(r, "pool_wait_ms",
                                json_real((double)(p->started_us - p->handled_us) / 1000.0));
            json_object_set_new(r, "lock_wait_ms",
                                json_real((double)(locked - p->started_us) / 1000.0));
            json_object_set_new(r, "work_ms", json_real((double)(end - locked) / 1000.0));
        }
        at_job_done(p->ctx, r);
    } else if (!why)
        at_info("event=push_local workspace=%s path=%s outcome=%s", p->ws, p->path, p->outcome);
    free(p);
}

static void start(push_t *p)
{
    p->url = at_worker_config(sync_g.w)->database_url;
    if (at_pool_submit(sync_g.pool, work, done, p) == AT_OK)
        return;
    if (p->ctx)
        at_job_defer(p->ctx, 200); /* the pool is full: later, on any instance */
    else
        watch_dirty(p->ws, p->path); /* looked at again, and written back then */
    free(p);
}

void handle_push(at_job_ctx_t *ctx)
{
    json_t *a = at_job_ctx_args(ctx);
    const char *ws = json_string_value(json_object_get(a, "workspace_id"));
    const char *op = json_string_value(json_object_get(a, "op"));
    const char *path = json_string_value(json_object_get(a, "path"));
    const char *to = json_string_value(json_object_get(a, "to"));
    const char *sha = json_string_value(json_object_get(a, "sha256"));
    const char *why = NULL;
    push_t *p = calloc(1, sizeof *p);
    if (!p) {
        at_job_fail(ctx, 0, "push: out of memory");
        return;
    }
    p->ctx = ctx;
    int move = op && !strcmp(op, "move");
    if (!ws || !at_is_uuid(ws) || !op || (strcmp(op, "write") && strcmp(op, "delete") && !move) ||
        !path || at_path_confine(path, strlen(path), p->path, sizeof p->path, &why) != AT_OK ||
        (move && (!to || at_path_confine(to, strlen(to), p->to, sizeof p->to, &why) != AT_OK))) {
        at_job_fail(ctx, 1, "push: bad args (%s)", why ? why : "workspace_id, op, path, to");
        free(p);
        return;
    }
    at_strlcpy(p->ws, ws, sizeof p->ws);
    at_strlcpy(p->op, op, sizeof p->op);
    p->enqueued_ms = at_job_ctx_job(ctx)->enqueued_at;
    p->handled_us = at_mono_us();
    if (sha)
        at_strlcpy(p->deleted_sha, sha, sizeof p->deleted_sha);
    start(p);
}

void push_local(const char *ws, const char *path)
{
    push_t *p = calloc(1, sizeof *p);
    if (!p) {
        at_warn("event=push_local_failed workspace=%s path=%s error=\"out of memory\"", ws, path);
        return;
    }
    at_strlcpy(p->ws, ws, sizeof p->ws);
    at_strlcpy(p->op, "write", sizeof p->op);
    at_strlcpy(p->path, path, sizeof p->path);
    start(p);
}
