#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "atelier/ignore.h"
#include "atelier/log.h"
#include "atelier/path.h"
#include "atelier/util.h"
#include "fsops.h"
#include "push.h"
#include "sync.h"

#define WD_BUCKETS 4096
#define DIRTY_BUCKETS 1024
#define EXPECT_SLOTS 64
#define DEBOUNCE_MAX_MS 50 /* a steady stream of events is taken in at least this often */
#define IGNORE_FILE ".atelierignore"
#define IGNORE_FILE_MAX 65536
#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM |              \
     IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

typedef struct dirty {
    struct dirty *next;
    int known; /* a row's file, in sync at size and mtime_ns: reading it can wait */
    int64_t size, mtime_ns;
    char path[];
} dirty_t;

typedef struct vol {
    struct vol *next;
    char ws[AT_UUID_LEN + 1];
    char dir[PATH_MAX];
    char sessions[WATCH_SESSIONS_MAX][AT_UUID_LEN + 1];
    int nsessions;
    at_ignore_t *ignore;
    dirty_t *dirty[DIRTY_BUCKETS];
    int ndirty;
    int busy;       /* a batch or a rescan is on the pool or in PostgreSQL */
    int rescan_due; /* take the whole volume in next */
    int stopped;    /* watch_stop while busy: freed when the work comes back */
    int64_t first_dirty_ms;
    at_io_timer_t *timer;
    struct {
        char path[AT_PATH_MAX + 1];
        char sha[AT_SHA256_HEX + 1];
    } expect[EXPECT_SLOTS];
    int expect_next;
} vol_t;

typedef struct wd_entry {
    struct wd_entry *next;
    int wd;
    vol_t *vol;
    char path[]; /* the folder, relative to the volume ("" for its root) */
} wd_entry_t;

static struct {
    int fd;
    at_io_watch_t *io;
    vol_t *vols;
    wd_entry_t *wds[WD_BUCKETS];
} W = {.fd = -1};

static void schedule(vol_t *v);

/* ---- tables ------------------------------------------------------------------- */

static unsigned str_hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static vol_t *vol_find(const char *ws)
{
    for (vol_t *v = W.vols; v; v = v->next)
        if (!strcmp(v->ws, ws))
            return v;
    return NULL;
}

static wd_entry_t *wd_find(int wd)
{
    for (wd_entry_t *e = W.wds[(unsigned)wd % WD_BUCKETS]; e; e = e->next)
        if (e->wd == wd)
            return e;
    return NULL;
}

static void wd_forget(int wd)
{
    for (wd_entry_t **pp = &W.wds[(unsigned)wd % WD_BUCKETS]; *pp; pp = &(*pp)->next) {
        if ((*pp)->wd == wd) {
            wd_entry_t *e = *pp;
            *pp = e->next;
            free(e);
            return;
        }
    }
}

/* wd now watches folder path of v (a moved folder's wd gets its new path). */
static void wd_set(vol_t *v, int wd, const char *path)
{
    wd_forget(wd);
    size_t n = strlen(path) + 1;
    wd_entry_t *e = malloc(sizeof *e + n);
    if (!e) {
        v->rescan_due = 1;
        return;
    }
    e->wd = wd;
    e->vol = v;
    memcpy(e->path, path, n);
    unsigned b = (unsigned)wd % WD_BUCKETS;
    e->next = W.wds[b];
    W.wds[b] = e;
}

/* Stop watching the folders of v at and below path ("": all of them). */
static void wd_drop_tree(vol_t *v, const char *path)
{
    size_t n = strlen(path);
    for (int b = 0; b < WD_BUCKETS; b++) {
        for (wd_entry_t **pp = &W.wds[b]; *pp;) {
            wd_entry_t *e = *pp;
            if (e->vol == v &&
                (!n || (!strncmp(e->path, path, n) && (e->path[n] == '\0' || e->path[n] == '/')))) {
                *pp = e->next;
                inotify_rm_watch(W.fd, e->wd);
                free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}

/* path to be looked at; row (may be NULL) is what its row says the volume
 * holds, for a rescan: a file that still matches it is not read. */
typedef struct row_hint {
    int64_t size, mtime_ns;
} row_hint_t;

static void mark_hint(vol_t *v, const char *path, const row_hint_t *row, int force)
{
    unsigned b = str_hash(path) % DIRTY_BUCKETS;
    for (dirty_t *d = v->dirty[b]; d; d = d->next) {
        if (!strcmp(d->path, path)) {
            if (force)
                d->known = 0; /* an event: whatever the row says, look */
            return;
        }
    }
    size_t n = strlen(path) + 1;
    dirty_t *d = malloc(sizeof *d + n);
    if (!d) {
        v->rescan_due = 1;
        return;
    }
    d->known = row != NULL;
    d->size = row ? row->size : 0;
    d->mtime_ns = row ? row->mtime_ns : 0;
    memcpy(d->path, path, n);
    d->next = v->dirty[b];
    v->dirty[b] = d;
    if (v->ndirty++ == 0)
        v->first_dirty_ms = (at_mono_us() / 1000);
}

static void mark(vol_t *v, const char *path)
{
    mark_hint(v, path, NULL, 1);
}

static void clear_dirty(vol_t *v)
{
    for (int b = 0; b < DIRTY_BUCKETS; b++) {
        while (v->dirty[b]) {
            dirty_t *d = v->dirty[b];
            v->dirty[b] = d->next;
            free(d);
        }
    }
    v->ndirty = 0;
}

static int expected(vol_t *v, const char *path, const char *sha)
{
    for (int i = 0; i < EXPECT_SLOTS; i++)
        if (!strcmp(v->expect[i].path, path) && !strcmp(v->expect[i].sha, sha))
            return 1;
    return 0;
}

/* ---- a batch: paths looked at on the pool, then taken in ----------------------- */

typedef enum { IT_GONE, IT_FILE, IT_FOLDER, IT_SKIP } item_kind_t;

typedef struct item {
    item_kind_t kind;
    char *path;
    char *data; /* IT_FILE: its bytes */
    fs_file_t f;
    int wd;          /* IT_FOLDER: the watch added (-1: none) */
    char **children; /* IT_FOLDER newly watched: what it holds (relative paths) */
    int nchildren;
    const char *note; /* IT_SKIP: why */
    int known;        /* as dirty_t */
    int64_t size, mtime_ns;
} item_t;

typedef struct batch {
    vol_t *v;
    item_t *items;
    int n;
    int pending; /* statements in flight */
    size_t max_size;
    int max_items;
} batch_t;

static void batch_free(batch_t *b)
{
    for (int i = 0; i < b->n; i++) {
        item_t *it = &b->items[i];
        free(it->path);
        free(it->data);
        for (int c = 0; c < it->nchildren; c++)
            free(it->children[c]);
        free(it->children);
    }
    free(b->items);
    free(b);
}

static int ignored(const vol_t *v, const char *path, int is_dir)
{
    const char *base = at_path_base(path);
    if (!strncmp(base, FS_TMP_PREFIX, sizeof FS_TMP_PREFIX - 1))
        return 1;
    return v->ignore && at_ignore_match(v->ignore, path, is_dir);
}

/* The names in folder path of v that are not ignored, as relative paths. */
static void list_children(const vol_t *v, int root, item_t *it)
{
    int fd = -1;
    if (*it->path) {
        struct stat st;
        if (fs_lstat(root, it->path, &st) != 0 || !S_ISDIR(st.st_mode))
            return;
        fd = openat(root, it->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    } else {
        fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[AT_PATH_MAX + 1];
        int n = snprintf(p, sizeof p, "%s%s%s", it->path, *it->path ? "/" : "", e->d_name);
        if (n < 0 || n >= (int)sizeof p || ignored(v, p, e->d_type == DT_DIR))
            continue;
        if (it->nchildren == cap) {
            cap = cap ? cap * 2 : 16;
            char **c = realloc(it->children, sizeof *c * (size_t)cap);
            if (!c)
                break;
            it->children = c;
        }
        if ((it->children[it->nchildren] = strdup(p)) != NULL)
            it->nchildren++;
    }
    closedir(d);
}

static void look(void *arg)
{
    batch_t *b = arg;
    vol_t *v = b->v;
    /* the mounted volume, held by its fd: an unmount now does not make its
     * files look deleted (the empty folder under it is never looked at) */
    int root = sync_open_volume(v->dir);
    for (int i = 0; root < 0 && i < b->n; i++) {
        b->items[i].kind = IT_SKIP;
        b->items[i].note = "volume not mounted";
        b->items[i].wd = -1;
    }
    for (int i = 0; root >= 0 && i < b->n; i++) {
        item_t *it = &b->items[i];
        it->wd = -1;
        struct stat st;
        int rc = *it->path ? fs_lstat(root, it->path, &st) : 0;
        if (rc == -ENOENT || rc == -ENOTDIR) {
            it->kind = IT_GONE;
        } else if (rc == -ELOOP || rc == -EXDEV) {
            it->kind = IT_SKIP; /* below a symlink: not ours to follow */
            it->note = "below a symlink";
        } else if (rc != 0) {
            it->kind = IT_SKIP;
            it->note = "cannot stat";
        } else if (!*it->path || S_ISDIR(st.st_mode)) {
            it->kind = IT_FOLDER;
            char full[PATH_MAX];
            snprintf(full, sizeof full, "%s%s%s", v->dir, *it->path ? "/" : "", it->path);
            it->wd = inotify_add_watch(W.fd, full, WATCH_MASK);
            list_children(v, root, it); /* after the watch: nothing falls between */
        } else if (S_ISREG(st.st_mode)) {
            it->kind = IT_FILE;
            int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if (it->known && st.st_size == it->size && mt == it->mtime_ns) {
                it->kind = IT_SKIP;
                it->note = "ignored"; /* unchanged since it last agreed with its row */
            } else if (ignored(v, it->path, 0)) {
                it->kind = IT_SKIP;
                it->note = "ignored";
            } else if ((rc = fs_read(root, it->path, b->max_size, &it->data, &it->f)) != 0) {
                it->kind = rc == -ENOENT ? IT_GONE : IT_SKIP;
                it->note = rc == -EFBIG ? "larger than MAX_FILE_SIZE" : "unreadable";
            }
        } else {
            it->kind = IT_SKIP; /* symlinks, fifos, sockets, devices */
            it->note = S_ISLNK(st.st_mode) ? "symlink" : "not a regular file";
        }
    }
    if (root >= 0)
        close(root);
}

static void batch_end(batch_t *b);

static void publish_change(vol_t *v, const char *path, const char *change, json_t *extra)
{
    for (int i = 0; i < v->nsessions; i++) {
        json_t *ev =
            json_pack("{s:s, s:s, s:s}", "type", "file_changed", "path", path, "change", change);
        if (extra)
            json_object_update(ev, extra);
        sync_publish(v->sessions[i], ev);
    }
    json_decref(extra);
}

typedef struct stmt {
    batch_t *b;
    item_t *it;
} stmt_t;

static void stmt_done(batch_t *b)
{
    if (--b->pending == 0)
        batch_end(b);
}

static void file_synced(PGresult *res, const char *err, void *arg)
{
    stmt_t *s = arg;
    vol_t *v = s->b->v;
    if (err) {
        at_warn("event=sync_file_failed workspace=%s path=%s error=\"%s\"", v->ws, s->it->path,
                err);
        publish_change(v, s->it->path, "error", json_pack("{s:s}", "message", err));
    } else if (PQntuples(res) == 1) {
        const char *result = PQgetvalue(res, 0, 0);
        if (strcmp(result, "same") != 0) {
            json_t *x = json_pack("{s:I, s:s, s:I}", "version",
                                  (json_int_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10), "sha256",
                                  s->it->f.sha256, "size", (json_int_t)s->it->f.size);
            if (!PQgetisnull(res, 0, 2)) {
                const char *cpath = PQgetvalue(res, 0, 2);
                json_object_set_new(x, "conflictPath", json_string(cpath));
                push_local(v->ws, cpath); /* the row's bytes, kept, onto the volume */
                at_info("event=sync_conflict workspace=%s path=%s kept=%s", v->ws, s->it->path,
                        cpath);
            }
            publish_change(v, s->it->path, !strcmp(result, "created") ? "created" : result, x);
        }
    }
    batch_t *b = s->b;
    free(s);
    stmt_done(b);
}

static void folder_synced(PGresult *res, const char *err, void *arg)
{
    stmt_t *s = arg;
    vol_t *v = s->b->v;
    batch_t *b = s->b;
    if (err)
        at_warn("event=sync_folder_failed workspace=%s path=%s error=\"%s\"", v->ws, s->it->path,
                err);
    else if (PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "created"))
        publish_change(v, s->it->path, "created", json_pack("{s:s}", "kind", "folder"));
    free(s);
    stmt_done(b);
}

static void deleted(PGresult *res, const char *err, void *arg)
{
    stmt_t *s = arg;
    vol_t *v = s->b->v;
    batch_t *b = s->b;
    if (err) {
        at_warn("event=sync_delete_failed workspace=%s path=%s error=\"%s\"", v->ws, s->it->path,
                err);
    } else {
        int kept = PQntuples(res);
        for (int r = 0; r < kept; r++)
            push_local(v->ws, PQgetvalue(res, r, 0)); /* saved since: written back */
        publish_change(v, s->it->path, "deleted", kept ? json_pack("{s:i}", "kept", kept) : NULL);
    }
    free(s);
    stmt_done(b);
}

static void take_in(batch_t *b, item_t *it)
{
    vol_t *v = b->v;
    char maxi[16];
    snprintf(maxi, sizeof maxi, "%d", b->max_items);
    stmt_t *s = malloc(sizeof *s);
    if (!s) {
        v->rescan_due = 1;
        return;
    }
    s->b = b;
    s->it = it;
    at_db_t *db = at_worker_db(sync_g.w);
    at_err_t e = AT_OK;
    if (it->kind == IT_FILE) {
        char size[24], mode[16], mt[24];
        snprintf(size, sizeof size, "%lld", (long long)it->f.size);
        snprintf(mode, sizeof mode, "%d", (int)(it->f.mode & 0777));
        snprintf(mt, sizeof mt, "%lld", (long long)it->f.mtime_ns);
        size_t len = (size_t)it->f.size;
        int text = at_utf8_valid(it->data ? it->data : "", len) &&
                   (!it->data || !memchr(it->data, '\0', len));
        const char *prm[] = {v->ws, it->path,     text ? (it->data ? it->data : "") : NULL,
                             NULL,  it->f.sha256, size,
                             mode,  mt,           maxi};
        int lens[9] = {0}, fmts[9] = {0};
        if (!text) {
            prm[3] = it->data ? it->data : "";
            lens[3] = (int)len;
            fmts[3] = 1;
        } else {
            lens[2] = (int)len;
        }
        e = at_db_query_bin(db,
                            "SELECT * FROM ws_sync_file($1::uuid, $2, $3, $4::bytea, $5, "
                            "$6::bigint, $7::int, $8::bigint, $9::int)",
                            9, prm, lens, fmts, file_synced, s);
    } else if (it->kind == IT_FOLDER) {
        if (!*it->path) {
            free(s);
            return;
        }
        const char *prm[] = {v->ws, it->path, maxi};
        e = at_db_query(db, "SELECT ws_sync_folder($1::uuid, $2, $3::int)", 3, prm, folder_synced,
                        s);
    } else {
        const char *prm[] = {v->ws, it->path};
        e = at_db_query(db, "SELECT ws_sync_delete($1::uuid, $2)", 2, prm, deleted, s);
    }
    if (e != AT_OK) {
        free(s);
        v->rescan_due = 1; /* the database is busy: look at everything again later */
        return;
    }
    b->pending++;
}

static void looked(void *arg, int ran)
{
    batch_t *b = arg;
    vol_t *v = b->v;
    b->pending = 1; /* held until every statement below is sent */
    for (int i = 0; ran && !v->stopped && i < b->n; i++) {
        item_t *it = &b->items[i];
        if (it->kind == IT_FOLDER) {
            if (it->wd >= 0)
                wd_set(v, it->wd, it->path);
            for (int c = 0; c < it->nchildren; c++)
                mark_hint(v, it->children[c], NULL, 0); /* keeps a row's hint */
        }
        if (it->kind == IT_GONE && *it->path)
            wd_drop_tree(v, it->path);
        if (it->kind == IT_SKIP) {
            if (strcmp(it->note, "ignored") != 0)
                at_debug("event=sync_skipped workspace=%s path=%s why=\"%s\"", v->ws, it->path,
                         it->note);
            continue;
        }
        if (it->kind == IT_FILE && expected(v, it->path, it->f.sha256))
            continue; /* a push wrote exactly this */
        if (it->kind == IT_GONE && !*it->path)
            continue;
        take_in(b, it);
    }
    stmt_done(b);
}

static void batch_end(batch_t *b)
{
    vol_t *v = b->v;
    batch_free(b);
    v->busy = 0;
    if (v->stopped) {
        watch_stop(v->ws);
        return;
    }
    if (v->ndirty || v->rescan_due)
        schedule(v);
}

/* ---- rescans: the whole volume against its rows ---------------------------------- */

/* A rescan is a batch of the root folder with every folder below marked
 * too, plus every row's path: whatever differs is then taken in. Rows are
 * read first so that a path that has a row and no file is looked at. */
static void rows_read(PGresult *res, const char *err, void *arg)
{
    vol_t *v = arg;
    v->busy = 0;
    if (err) {
        at_warn("event=rescan_failed workspace=%s error=\"%s\"", v->ws, err);
        v->rescan_due = 1;
    } else {
        for (int r = 0; r < PQntuples(res); r++) {
            /* a file whose row agrees with the volume at a known mtime */
            row_hint_t h = {strtoll(PQgetvalue(res, r, 1), NULL, 10),
                            strtoll(PQgetvalue(res, r, 2), NULL, 10)};
            int in_sync = !PQgetisnull(res, r, 2) && PQgetvalue(res, r, 3)[0] == 't';
            mark_hint(v, PQgetvalue(res, r, 0), in_sync ? &h : NULL, 0);
        }
        mark(v, ""); /* the root: its folders and files, then theirs */
    }
    if (v->stopped)
        watch_stop(v->ws);
    else
        schedule(v);
}

static void load_ignore(vol_t *v)
{
    at_ignore_t *ig = at_ignore_new(AT_IGNORE_DEFAULTS, strlen(AT_IGNORE_DEFAULTS), NULL);
    int root = sync_open_volume(v->dir);
    char *text = NULL;
    fs_file_t f;
    if (ig && root >= 0 && fs_read(root, IGNORE_FILE, IGNORE_FILE_MAX, &text, &f) == 0 && text)
        at_ignore_add(ig, text, (size_t)f.size);
    free(text);
    if (root >= 0)
        close(root);
    if (ig) {
        at_ignore_free(v->ignore);
        v->ignore = ig;
    }
}

static void rescan(vol_t *v)
{
    v->rescan_due = 0;
    v->busy = 1;
    load_ignore(v); /* small and rare: a rescan, or .atelierignore changed */
    const char *prm[] = {v->ws};
    if (at_db_query(at_worker_db(sync_g.w),
                    "SELECT path, size, disk_mtime_ns, type = 'file' AND sha256 = disk_sha256 "
                    "FROM workspace_items WHERE workspace_id = $1::uuid",
                    1, prm, rows_read, v) != AT_OK) {
        v->busy = 0;
        v->rescan_due = 1;
        at_io_timer_start(v->timer, 1000, 0);
    }
}

/* ---- scheduling ---------------------------------------------------------------- */

static void run(void *arg)
{
    vol_t *v = arg;
    if (v->busy || v->stopped)
        return;
    if (v->rescan_due) {
        rescan(v);
        return;
    }
    if (!v->ndirty)
        return;
    batch_t *b = calloc(1, sizeof *b);
    int n = v->ndirty < WATCH_BATCH_MAX ? v->ndirty : WATCH_BATCH_MAX;
    if (b)
        b->items = calloc((size_t)n, sizeof *b->items);
    if (!b || !b->items) {
        free(b);
        at_io_timer_start(v->timer, 100, 0);
        return;
    }
    b->v = v;
    b->max_size = (size_t)at_worker_config(sync_g.w)->max_file_size;
    b->max_items = (int)at_worker_config(sync_g.w)->max_files_per_workspace;
    int reload = 0;
    for (int k = 0; k < DIRTY_BUCKETS && b->n < n; k++) {
        while (v->dirty[k] && b->n < n) {
            dirty_t *d = v->dirty[k];
            v->dirty[k] = d->next;
            v->ndirty--;
            if (!strcmp(d->path, IGNORE_FILE))
                reload = 1;
            item_t *it = &b->items[b->n];
            it->path = strdup(d->path);
            it->known = d->known;
            it->size = d->size;
            it->mtime_ns = d->mtime_ns;
            if (it->path)
                b->n++;
            free(d);
        }
    }
    if (reload)
        load_ignore(v);
    v->busy = 1;
    if (at_pool_submit(sync_g.pool, look, looked, b) != AT_OK) {
        for (int i = 0; i < b->n; i++)
            mark(v, b->items[i].path);
        batch_free(b);
        v->busy = 0;
        at_io_timer_start(v->timer, 50, 0);
    }
}

static void schedule(vol_t *v)
{
    if (v->busy || v->stopped)
        return;
    if (v->rescan_due) {
        at_io_timer_start(v->timer, 0, 0);
        return;
    }
    int64_t waited = (at_mono_us() / 1000) - v->first_dirty_ms;
    at_io_timer_start(v->timer, waited >= DEBOUNCE_MAX_MS ? 0 : WATCH_DEBOUNCE_MS, 0);
}

/* ---- inotify ------------------------------------------------------------------ */

static void overflowed(void)
{
    at_warn("event=inotify_overflow action=rescan");
    for (vol_t *v = W.vols; v; v = v->next) {
        v->rescan_due = 1;
        schedule(v);
    }
}

static void on_event(const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        overflowed();
        return;
    }
    wd_entry_t *e = wd_find(ev->wd);
    if (!e)
        return; /* a folder no longer watched (its events were taken in by path) */
    vol_t *v = e->vol;
    if (ev->mask & IN_IGNORED) {
        wd_forget(ev->wd); /* the folder is gone (or unmounted) */
        return;
    }
    if (ev->mask & (IN_DELETE_SELF | IN_UNMOUNT)) {
        mark(v, e->path);
    } else if (ev->len && ev->name[0]) {
        char p[AT_PATH_MAX + 1];
        int n = snprintf(p, sizeof p, "%s%s%s", e->path, *e->path ? "/" : "", ev->name);
        if (n < 0 || n >= (int)sizeof p ||
            !strncmp(ev->name, FS_TMP_PREFIX, sizeof FS_TMP_PREFIX - 1))
            return;
        if ((ev->mask & IN_MOVED_FROM) && (ev->mask & IN_ISDIR))
            wd_drop_tree(v, p); /* its wds would keep the old path */
        if (!ignored(v, p, (ev->mask & IN_ISDIR) != 0) || !strcmp(p, IGNORE_FILE))
            mark(v, p);
    }
    if (v->ndirty)
        schedule(v);
}

static void on_readable(int fd, int events, void *arg)
{
    (void)events;
    (void)arg;
    char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return; /* EAGAIN: all read */
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            on_event(ev);
            p += sizeof *ev + ev->len;
        }
    }
}

/* ---- the API ------------------------------------------------------------------- */

int watch_init(void)
{
    W.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (W.fd < 0) {
        at_error("event=inotify_failed error=\"%s\"", strerror(errno));
        return -1;
    }
    W.io = at_io_watch_new(at_worker_io(sync_g.w), W.fd, on_readable, NULL);
    if (!W.io)
        return -1;
    at_io_watch_set(W.io, AT_IO_READ);
    return 0;
}

static void vol_free(vol_t *v)
{
    wd_drop_tree(v, "");
    clear_dirty(v);
    at_io_timer_free(v->timer);
    at_ignore_free(v->ignore);
    free(v);
}

void watch_shutdown(void)
{
    while (W.vols) {
        vol_t *v = W.vols;
        W.vols = v->next;
        vol_free(v); /* work on the pool was finished by at_pool_free */
    }
    at_io_watch_free(W.io);
    W.io = NULL;
    if (W.fd >= 0)
        close(W.fd);
    W.fd = -1;
}

int watch_start(const char *ws, const char *dir, const char sessions[][37], int nsessions)
{
    vol_t *v = vol_find(ws);
    if (!v) {
        v = calloc(1, sizeof *v);
        if (!v)
            return -1;
        at_strlcpy(v->ws, ws, sizeof v->ws);
        at_strlcpy(v->dir, dir, sizeof v->dir);
        v->timer = at_io_timer_new(at_worker_io(sync_g.w), run, v);
        if (!v->timer) {
            free(v);
            return -1;
        }
        v->next = W.vols;
        W.vols = v;
        v->rescan_due = 1;
        at_info("event=watch_started workspace=%s dir=%s", ws, dir);
        schedule(v);
    }
    v->nsessions = nsessions < WATCH_SESSIONS_MAX ? nsessions : WATCH_SESSIONS_MAX;
    for (int i = 0; i < v->nsessions; i++)
        at_strlcpy(v->sessions[i], sessions[i], sizeof v->sessions[i]);
    return 0;
}

void watch_stop(const char *ws)
{
    for (vol_t **pp = &W.vols; *pp; pp = &(*pp)->next) {
        vol_t *v = *pp;
        if (strcmp(v->ws, ws) != 0)
            continue;
        if (v->busy) {
            v->stopped = 1; /* freed when its work comes back */
            return;
        }
        *pp = v->next;
        at_info("event=watch_stopped workspace=%s", ws);
        vol_free(v);
        return;
    }
}

int watch_has(const char *ws)
{
    return vol_find(ws) != NULL;
}

void watch_each(void (*fn)(const char *ws, void *arg), void *arg)
{
    for (vol_t *v = W.vols, *next; v; v = next) {
        next = v->next;
        fn(v->ws, arg);
    }
}

void watch_dirty(const char *ws, const char *path)
{
    vol_t *v = vol_find(ws);
    if (v) {
        mark(v, path);
        schedule(v);
    }
}

void watch_expect(const char *ws, const char *path, const char *sha)
{
    vol_t *v = vol_find(ws);
    if (!v)
        return;
    at_strlcpy(v->expect[v->expect_next].path, path, sizeof v->expect[0].path);
    at_strlcpy(v->expect[v->expect_next].sha, sha, sizeof v->expect[0].sha);
    v->expect_next = (v->expect_next + 1) % EXPECT_SLOTS;
}
