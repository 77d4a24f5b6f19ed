#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "atelier/events.h"
#include "atelier/ignore.h"
#include "atelier/log.h"
#include "atelier/path.h"
#include "atelier/util.h"
#include "fsops.h"
#include "push.h"
#include "sync.h"

#define WD_BUCKETS 4096
#define DIRTY_BUCKETS 1024
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

/* ---- the worker's own writes ------------------------------------------------------ */

/* A push that writes a file says so (from its pool thread, under the
 * volume's lock): when the watcher then finds the file at exactly that size
 * and mtime, the events were the push's own and there is nothing to read or
 * take in. Keyed by a hash of workspace and path; a slot is used once. */
#define OWN_SLOTS 1024

static pthread_mutex_t own_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t key;
    int64_t size, mtime_ns;
} own[OWN_SLOTS];
static unsigned own_next;

static uint64_t own_key(const char *ws, const char *path)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *p = ws; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = path; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h | 1; /* 0 marks a free slot */
}

void watch_own_write(const char *ws, const char *path, int64_t size, int64_t mtime_ns)
{
    uint64_t k = own_key(ws, path);
    pthread_mutex_lock(&own_mu);
    unsigned i = own_next++ % OWN_SLOTS;
    own[i].key = k;
    own[i].size = size;
    own[i].mtime_ns = mtime_ns;
    pthread_mutex_unlock(&own_mu);
}

static int own_write(const char *ws, const char *path, int64_t size, int64_t mtime_ns)
{
    uint64_t k = own_key(ws, path);
    int found = 0;
    pthread_mutex_lock(&own_mu);
    for (unsigned i = 0; i < OWN_SLOTS && !found; i++) {
        if (own[i].key == k && own[i].size == size && own[i].mtime_ns == mtime_ns) {
            own[i].key = 0;
            found = 1;
        }
    }
    pthread_mutex_unlock(&own_mu);
    return found;
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
    int phase;      /* statements: 0 folders, 1 files, 2 deletes, 3 done */
    int lock_fd;    /* the volume's root, flock'ed from the look to the end (-1: none) */
    json_t *events; /* file_changed to publish at the end (publish_change) */
    int sent, scan; /* items up to sent are in statements; scan: where the last began */
    size_t max_size;
    int max_items;
} batch_t;

static void batch_free(batch_t *b)
{
    json_decref(b->events);
    if (b->lock_fd >= 0)
        close(b->lock_fd); /* and the volume's lock with it */
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
    /* the volume's lock (push.c) until the batch's statements are through:
     * no push writes between what is read here and what the rows become */
    while (root >= 0 && flock(root, LOCK_EX) != 0 && errno == EINTR) {
    }
    b->lock_fd = root;
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
            char full[PATH_MAX + AT_PATH_MAX + 2];
            snprintf(full, sizeof full, "%s%s%s", v->dir, *it->path ? "/" : "", it->path);
            it->wd = inotify_add_watch(W.fd, full, WATCH_MASK);
            list_children(v, root, it); /* after the watch: nothing falls between */
        } else if (S_ISREG(st.st_mode)) {
            it->kind = IT_FILE;
            int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if ((it->known && st.st_size == it->size && mt == it->mtime_ns) ||
                own_write(v->ws, it->path, st.st_size, mt)) {
                it->kind = IT_SKIP;
                it->note = "ignored"; /* unchanged since it last agreed with its row */
            } else if (ignored(v, it->path, 0)) {
                it->kind = IT_SKIP;
                it->note = "ignored";
            } else if ((rc = fs_read(root, it->path, b->max_size, &it->data, &it->f)) != 0) {
                /* one grown past the limit leaves sync: its row goes (unless
                 * saved since, by the rule) */
                it->kind = rc == -ENOENT || rc == -EFBIG ? IT_GONE : IT_SKIP;
                it->note = rc == -EFBIG ? "larger than MAX_FILE_SIZE" : "unreadable";
            }
        } else {
            /* symlinks, fifos, sockets, devices are not synced: a row of a
             * file that became one goes */
            it->kind = IT_GONE;
            it->note = S_ISLNK(st.st_mode) ? "symlink" : "not a regular file";
        }
    }
}

static void batch_end(batch_t *b);

static void publish(vol_t *v, json_t *ev)
{
    for (int i = 0; i < v->nsessions; i++)
        at_event_publish(at_worker_redis(sync_g.w), v->sessions[i], json_deep_copy(ev));
    json_decref(ev);
}

/* A change taken in: published when the batch ends, one event per path, or
 * for a burst (more than EVENTS_EACH_MAX) one event naming them all, so a
 * script writing 10,000 files does not send a browser 10,000 messages. */
#define EVENTS_EACH_MAX 32

static void publish_change(batch_t *b, const char *path, const char *change, json_t *extra)
{
    json_t *ev =
        json_pack("{s:s, s:s, s:s}", "type", "file_changed", "path", path, "change", change);
    if (ev && extra)
        json_object_update(ev, extra);
    json_decref(extra);
    if (!ev)
        return;
    if (!strcmp(change, "error") || !strcmp(change, "conflict") || !b->events)
        publish(b->v, ev); /* always on their own */
    else
        json_array_append_new(b->events, ev);
}

static void publish_events(batch_t *b)
{
    size_t n = json_array_size(b->events);
    if (n > EVENTS_EACH_MAX) {
        json_t *paths = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append(paths, json_object_get(json_array_get(b->events, i), "path"));
        publish(b->v, json_pack("{s:s, s:s, s:I, s:o}", "type", "file_changed", "change", "many",
                                "count", (json_int_t)n, "paths", paths));
    } else {
        for (size_t i = 0; i < n; i++)
            publish(b->v, json_incref(json_array_get(b->events, i)));
    }
    json_array_clear(b->events);
}

/* The batch's statements, one at a time (folders, then files, then what
 * went): a folder made in one and a file's parent made in another would
 * otherwise race for the same row. Each takes at most STMT_ITEMS items and
 * STMT_BYTES of content. */
#define STMT_ITEMS 256
#define STMT_BYTES (8 << 20)

static void next_stmt(batch_t *b);

static void stmt_failed(batch_t *b, const char *what, const char *err)
{
    at_warn("event=sync_%s_failed workspace=%s error=\"%s\"", what, b->v->ws, err);
    b->v->rescan_due = 1; /* nothing is lost: everything is compared again */
}

static void folders_synced(PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    if (err)
        stmt_failed(b, "folders", err);
    for (int r = 0; !err && r < PQntuples(res); r++) {
        const char *result = PQgetvalue(res, r, 1);
        if (!strcmp(result, "created"))
            publish_change(b, PQgetvalue(res, r, 0), "created",
                           json_pack("{s:s}", "kind", "folder"));
        else if (strcmp(result, "same") != 0)
            at_warn("event=sync_folder_refused workspace=%s path=%s result=%s", b->v->ws,
                    PQgetvalue(res, r, 0), result);
    }
    next_stmt(b);
}

/* A table that grows fast from small (a new deployment, a burst into a new
 * workspace) keeps the planner's row counts of when it was small until
 * autovacuum comes by (a minute): its look-ups turn into scans and a burst
 * of 10,000 new files becomes quadratic (measured: batch times grew from
 * 90 to 880 ms, then fell to 30 ms at the next ANALYZE). So after many
 * inserts, the worker asks for one itself, at most every ANALYZE_EVERY_MS. */
#define ANALYZE_AFTER_ROWS 1000
#define ANALYZE_EVERY_MS 5000

static void count_created(int created)
{
    static int since;
    static int64_t last_ms;
    since += created;
    int64_t now = at_mono_us() / 1000;
    if (since < ANALYZE_AFTER_ROWS || now - last_ms < ANALYZE_EVERY_MS)
        return;
    since = 0;
    last_ms = now;
    at_db_query(at_worker_db(sync_g.w), "ANALYZE workspace_items", 0, NULL, NULL, NULL);
}

static void files_synced(PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    vol_t *v = b->v;
    int created = 0;
    if (err)
        stmt_failed(b, "files", err);
    for (int r = 0; !err && r < PQntuples(res); r++) {
        const char *path = PQgetvalue(res, r, 0), *result = PQgetvalue(res, r, 1);
        item_t *it = NULL;
        for (int i = b->scan; i < b->sent && !it; i++)
            if (b->items[i].kind == IT_FILE && !strcmp(b->items[i].path, path))
                it = &b->items[i];
        created += !strcmp(result, "created");
        if (!strcmp(result, "same") || !it)
            continue;
        if (!strcmp(result, "error")) {
            at_warn("event=sync_file_refused workspace=%s path=%s error=\"%s\"", v->ws, path,
                    PQgetvalue(res, r, 4));
            publish_change(b, path, "error", json_pack("{s:s}", "message", PQgetvalue(res, r, 4)));
            continue;
        }
        json_t *x = json_pack("{s:I, s:s, s:I}", "version",
                              (json_int_t)strtoll(PQgetvalue(res, r, 2), NULL, 10), "sha256",
                              it->f.sha256, "size", (json_int_t)it->f.size);
        if (!PQgetisnull(res, r, 3)) {
            const char *cpath = PQgetvalue(res, r, 3);
            json_object_set_new(x, "conflictPath", json_string(cpath));
            push_local(v->ws, cpath); /* the row's bytes, kept, onto the volume */
            at_info("event=sync_conflict workspace=%s path=%s kept=%s", v->ws, path, cpath);
        }
        publish_change(b, path, result, x);
    }
    count_created(created);
    next_stmt(b);
}

static void deletes_synced(PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    if (err)
        stmt_failed(b, "deletes", err);
    for (int r = 0; !err && r < PQntuples(res); r++) {
        const char *path = PQgetvalue(res, r, 0);
        if (PQgetvalue(res, r, 1)[0] == 't')
            push_local(b->v->ws, path); /* saved since it last agreed: written back */
        else
            publish_change(b, path, "deleted", NULL);
    }
    next_stmt(b);
}

/* What a file item adds to a ws_sync_files batch. */
static json_t *file_json(const item_t *it)
{
    size_t len = (size_t)it->f.size;
    const char *d = it->data ? it->data : "";
    json_t *j = json_pack("{s:s, s:s, s:I, s:i, s:I}", "path", it->path, "sha", it->f.sha256,
                          "size", (json_int_t)it->f.size, "mode", (int)(it->f.mode & 0777), "mtime",
                          (json_int_t)it->f.mtime_ns);
    if (!j)
        return NULL;
    if (at_utf8_valid(d, len) && !memchr(d, '\0', len)) {
        json_object_set_new(j, "content", json_stringn(d, len));
    } else {
        size_t cap = 4 * ((len + 2) / 3) + 1;
        char *b64 = malloc(cap);
        if (!b64) {
            json_decref(j);
            return NULL;
        }
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)d, (int)len);
        json_object_set_new(j, "b64", json_string(b64));
        free(b64);
    }
    return j;
}

static int wants(const batch_t *b, const item_t *it)
{
    if (b->phase == 0)
        return it->kind == IT_FOLDER && *it->path;
    if (b->phase == 1)
        return it->kind == IT_FILE;
    return it->kind == IT_GONE && *it->path;
}

/* Send the next statement of the batch, or end it. */
static void next_stmt(batch_t *b)
{
    static const char *const sql[] = {
        "SELECT * FROM ws_sync_folders($1::uuid, $2::json, $3::int)",
        "SELECT * FROM ws_sync_files($1::uuid, $2::json, $3::int)",
        "SELECT * FROM ws_sync_deletes($1::uuid, $2::json)",
    };
    static at_db_cb *const cb[] = {folders_synced, files_synced, deletes_synced};
    while (b->phase < 3) {
        if (b->sent >= b->n) { /* this phase is through: the next from the start */
            b->phase++;
            b->sent = b->scan = 0;
            continue;
        }
        json_t *arr = json_array();
        size_t bytes = 0;
        b->scan = b->sent;
        while (arr && b->sent < b->n && json_array_size(arr) < STMT_ITEMS && bytes < STMT_BYTES) {
            item_t *it = &b->items[b->sent++];
            if (!wants(b, it))
                continue;
            json_t *j = b->phase == 1 ? file_json(it) : json_string(it->path);
            if (!j || json_array_append_new(arr, j) != 0)
                b->v->rescan_due = 1;
            bytes += b->phase == 1 ? (size_t)it->f.size : 0;
        }
        if (!arr || json_array_size(arr) == 0) {
            json_decref(arr);
            continue;
        }
        char *text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        char maxi[16];
        snprintf(maxi, sizeof maxi, "%d", b->max_items);
        const char *prm[] = {b->v->ws, text, maxi};
        at_err_t e = text ? at_db_query(at_worker_db(sync_g.w), sql[b->phase],
                                        b->phase == 2 ? 2 : 3, prm, cb[b->phase], b)
                          : AT_ENOMEM;
        free(text);
        if (e == AT_OK)
            return;
        stmt_failed(b, "batch", at_strerror(e));
    }
    batch_end(b);
}

static void stash_replay(void);

static void looked(void *arg, int ran)
{
    batch_t *b = arg;
    vol_t *v = b->v;
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
        if (it->kind == IT_SKIP && strcmp(it->note, "ignored") != 0)
            at_debug("event=sync_skipped workspace=%s path=%s why=\"%s\"", v->ws, it->path,
                     it->note);
    }
    if (!ran || v->stopped)
        b->phase = 3;
    else
        stash_replay(); /* events of the folders just registered */
    next_stmt(b);
}

static void batch_end(batch_t *b)
{
    vol_t *v = b->v;
    publish_events(b);
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
    b->lock_fd = -1;
    b->events = json_array();
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

/* Events of a watch not registered yet: a new folder's watch is added on
 * the pool (then the folder is listed) and registered on the loop when the
 * look comes back; what happens in it in between is kept here and replayed
 * then. Entries nobody claims within STASH_KEEP_MS were of folders no
 * longer watched. Overflowing it is an overflow: everything is rescanned. */
#define STASH_MAX 16384
#define STASH_KEEP_MS 5000

typedef struct stashed {
    int wd;
    uint32_t mask;
    int64_t at_ms;
    char name[NAME_MAX + 1];
} stashed_t;

static struct {
    stashed_t *e;
    int n;
} stash;

static void on_event(const struct inotify_event *ev);

static void stash_add(const struct inotify_event *ev)
{
    if (!stash.e && !(stash.e = calloc(STASH_MAX, sizeof *stash.e))) {
        overflowed();
        return;
    }
    if (stash.n == STASH_MAX || ev->len > NAME_MAX + 1) {
        stash.n = 0;
        overflowed();
        return;
    }
    stashed_t *x = &stash.e[stash.n++];
    x->wd = ev->wd;
    x->mask = ev->mask;
    x->at_ms = at_mono_us() / 1000;
    at_strlcpy(x->name, ev->len ? ev->name : "", sizeof x->name);
}

/* After watches were registered: their events, in the order they came. */
static void stash_replay(void)
{
    int64_t now = at_mono_us() / 1000;
    int keep = 0;
    char buf[sizeof(struct inotify_event) + NAME_MAX + 1]
        __attribute__((aligned(__alignof__(struct inotify_event))));
    struct inotify_event *ev = (struct inotify_event *)buf;
    for (int i = 0; i < stash.n; i++) {
        stashed_t *x = &stash.e[i];
        if (wd_find(x->wd)) {
            ev->wd = x->wd;
            ev->mask = x->mask;
            ev->cookie = 0;
            ev->len = (uint32_t)strlen(x->name) + 1;
            memcpy(ev->name, x->name, ev->len);
            on_event(ev);
        } else if (now - x->at_ms < STASH_KEEP_MS) {
            stash.e[keep++] = *x;
        }
    }
    stash.n = keep;
}

static void on_event(const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        overflowed();
        return;
    }
    wd_entry_t *e = wd_find(ev->wd);
    if (!e) {
        if (!(ev->mask & IN_IGNORED))
            stash_add(ev); /* a watch on its way to the table, or one gone */
        return;
    }
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
    free(stash.e);
    stash.e = NULL;
    stash.n = 0;
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
