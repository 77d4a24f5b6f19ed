/*
 * The `push` job: a path saved, deleted or moved through the API, applied
 * to the volume of a running session (ARCHITECTURE.md, data path 3). args
 * (gateway/files_common.h, PUSH_JOBS): {workspace_id, op: write | delete |
 * move, path, to?, type, version, sha256}.
 *
 * The job never carries content: it reads the row as it is now, so a late
 * job writes the newest version, never an older one over a newer. What the
 * row last agreed with on the volume (disk_sha256) decides what to do with
 * the file there:
 *
 *   file == row            nothing to write
 *   file == disk_sha256    or absent: the sandbox did not touch it; write
 *   anything else          the sandbox changed it meanwhile: leave it; the
 *                          watcher takes it in and ws_sync_file applies the
 *                          conflict rule (shared/sql/005_sync.sql)
 *
 * The file work runs on the pool under an exclusive flock of the volume's
 * root, which every sync-worker instance takes before touching a volume.
 * Result: {"outcome": written | same | gone | skipped | sandbox_changed |
 * removed | moved, ...}.
 */
#include "push.h"

#include <errno.h>
#include <fcntl.h>
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
    at_job_ctx_t *ctx;
    char ws[AT_UUID_LEN + 1];
    char op[8];
    char path[AT_PATH_MAX + 1];
    char to[AT_PATH_MAX + 1];
    char deleted_sha[AT_SHA256_HEX + 1]; /* delete: the version deleted */
    char dir[PATH_MAX];                  /* the volume */
    /* the row now (write: at path; move: at to) */
    int has_row, is_folder, has_disk_sha;
    char sha[AT_SHA256_HEX + 1], disk_sha[AT_SHA256_HEX + 1];
    unsigned char *bin; /* content_bin (PQunescapeBytea's), or */
    char *text;         /* content (a copy) */
    size_t len;
    int mode;
    /* the pool's answer */
    int rc;
    const char *outcome;
    fs_file_t f;
} push_t;

static void push_free(push_t *p)
{
    PQfreemem(p->bin);
    free(p->text);
    free(p);
}

/* The end of a push: the job's, or (push_local) a log line. */
static void end_ok(push_t *p, json_t *r)
{
    if (p->ctx) {
        at_job_done(p->ctx, r);
    } else {
        char *t = r ? json_dumps(r, JSON_COMPACT) : NULL;
        at_info("event=push_local workspace=%s result=%s", p->ws, t ? t : "{}");
        free(t);
        json_decref(r);
    }
    push_free(p);
}

static void end_fail(push_t *p, int permanent, const char *what)
{
    if (p->ctx)
        at_job_fail(p->ctx, permanent, "push %s %s: %s", p->op, p->path, what);
    else
        at_warn("event=push_local_failed workspace=%s path=%s error=\"%s\"", p->ws, p->path, what);
    push_free(p);
}

/* ---- on the pool -------------------------------------------------------------- */

/* Write the row's bytes unless the sandbox changed the file since it last
 * agreed with the row. */
static void apply_write(push_t *p, int root, uid_t uid, gid_t gid)
{
    if (!p->has_row) {
        p->outcome = "gone"; /* deleted since: its delete job follows */
        return;
    }
    if (p->is_folder) {
        p->rc = fs_mkdirs(root, p->path, uid, gid);
        p->outcome = "written";
        return;
    }
    fs_file_t now;
    int rc = fs_hash(root, p->path, &now);
    if (rc == 0 && !strcmp(now.sha256, p->sha)) {
        p->f = now;
        p->outcome = "same";
        return;
    }
    if (rc == 0 && (!p->has_disk_sha || strcmp(now.sha256, p->disk_sha) != 0)) {
        p->outcome = "sandbox_changed";
        return;
    }
    if (rc != 0 && rc != -ENOENT) {
        p->rc = rc;
        return;
    }
    const void *data = p->bin ? (const void *)p->bin : (const void *)p->text;
    p->rc = fs_write_atomic(root, p->path, data, p->len, (mode_t)p->mode, uid, gid, &p->f);
    p->outcome = "written";
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
    int root = sync_open_volume(p->dir);
    struct stat st;
    if (root < 0 || fstat(root, &st) != 0) {
        p->outcome = "skipped"; /* not running: the next load brings it */
        if (root >= 0)
            close(root);
        return;
    }
    /* every instance takes it before touching the volume */
    while (flock(root, LOCK_EX) != 0 && errno == EINTR) {
    }
    if (!strcmp(p->op, "write"))
        apply_write(p, root, st.st_uid, st.st_gid);
    else if (!strcmp(p->op, "delete"))
        apply_delete(p, root);
    else {
        p->rc = fs_rename(root, p->path, p->to, st.st_uid, st.st_gid);
        if (p->rc == -ENOENT)
            p->rc = 0; /* moved already, or never on the volume */
        p->outcome = "moved";
    }
    close(root); /* and the lock with it */
}

/* ---- on the loop ---------------------------------------------------------------- */

static void finish(push_t *p)
{
    json_t *r = json_pack("{s:s, s:s}", "outcome", p->outcome, "path", p->path);
    if (!strcmp(p->outcome, "sandbox_changed"))
        watch_dirty(p->ws, p->path); /* the watcher decides, by the rule */
    end_ok(p, r);
}

static void recorded(PGresult *res, const char *err, void *arg)
{
    push_t *p = arg;
    if (err)
        at_warn("event=push_record_failed workspace=%s path=%s error=\"%s\"", p->ws, p->path, err);
    (void)res;
    finish(p);
}

static void done(void *arg, int ran)
{
    push_t *p = arg;
    if (!ran) {
        end_fail(p, 0, "worker stopping");
        return;
    }
    if (p->rc != 0) {
        int symlink = p->rc == -ELOOP || p->rc == -EXDEV;
        end_fail(p, symlink, symlink ? "a symlink is in the way (not followed)" : strerror(-p->rc));
        return;
    }
    if (!strcmp(p->op, "write") && !p->is_folder &&
        (!strcmp(p->outcome, "written") || !strcmp(p->outcome, "same"))) {
        /* the volume now holds this sha: only if the row still does */
        char mt[24];
        snprintf(mt, sizeof mt, "%lld", (long long)p->f.mtime_ns);
        const char *prm[] = {p->ws, p->path, p->sha, mt};
        watch_expect(p->ws, p->path, p->sha);
        if (at_db_query(at_worker_db(sync_g.w),
                        "UPDATE workspace_items SET disk_sha256 = $3, disk_mtime_ns = $4 "
                        "WHERE workspace_id = $1::uuid AND path = $2 AND sha256 = $3",
                        4, prm, recorded, p) == AT_OK)
            return;
    }
    finish(p);
}

static void row_read(PGresult *res, const char *err, void *arg)
{
    push_t *p = arg;
    if (err) {
        end_fail(p, 0, err);
        return;
    }
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        sync_volume_dir(PQgetvalue(res, 0, 0), p->dir, sizeof p->dir) != 0) {
        end_ok(p, json_pack("{s:s}", "outcome", "no_workspace"));
        return;
    }
    p->has_row = !PQgetisnull(res, 0, 1);
    if (p->has_row) {
        p->is_folder = !strcmp(PQgetvalue(res, 0, 1), "folder");
        if (!PQgetisnull(res, 0, 2)) {
            p->len = (size_t)PQgetlength(res, 0, 2);
            p->text = malloc(p->len + 1);
            if (p->text)
                memcpy(p->text, PQgetvalue(res, 0, 2), p->len);
        } else if (!PQgetisnull(res, 0, 3)) {
            p->bin = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 3), &p->len);
        }
        if ((!PQgetisnull(res, 0, 2) && !p->text) || (!PQgetisnull(res, 0, 3) && !p->bin)) {
            end_fail(p, 0, "out of memory");
            return;
        }
        at_strlcpy(p->sha, PQgetvalue(res, 0, 4), sizeof p->sha);
        p->mode = atoi(PQgetvalue(res, 0, 5)) & 07777;
        p->has_disk_sha = !PQgetisnull(res, 0, 6);
        at_strlcpy(p->disk_sha, PQgetvalue(res, 0, 6), sizeof p->disk_sha);
    }
    if (at_pool_submit(sync_g.pool, work, done, p) != AT_OK) {
        if (p->ctx)
            at_job_defer(p->ctx, 200); /* the pool is full: later, on any instance */
        else
            watch_dirty(p->ws, p->path); /* looked at again, and written back then */
        push_free(p);
    }
}

/* Read the row (write: at path; move: at to), then the pool. */
static void start(push_t *p)
{
    const char *prm[] = {p->ws, !strcmp(p->op, "move") ? p->to : p->path};
    if (at_db_query(at_worker_db(sync_g.w),
                    "SELECT ws_volume_name($1::uuid), i.type, i.content, i.content_bin, i.sha256, "
                    "i.mode, i.disk_sha256 FROM (SELECT 1) o LEFT JOIN workspace_items i ON "
                    "i.workspace_id = $1::uuid AND i.path = $2",
                    2, prm, row_read, p) != AT_OK)
        end_fail(p, 0, "database busy");
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
