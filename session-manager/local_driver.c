/* The `local` runtime driver: see local_driver.h for the layout and the rules. */
#include "local_driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "cgroup.h"
#include "initctl.h"
#include "volume.h"

#define PROBE_TIMEOUT_MS 250 /* "does init answer": a live init accepts at once */
#define REQ_TIMEOUT_MS 2000
#define KILL_TIMEOUT_MS 5000
#define UMOUNT_TIMEOUT_MS 2000
#define EXIT_GRACE_MS 200 /* output still read after the process exited */
#define KILL_DRAIN_MS 2000
#define MAX_LAUNCHED 4096

/* A sandbox this process launched: bwrap is our child and must be reaped. */
typedef struct {
    char session[AT_CGROUP_NAME_MAX + 1];
    pid_t bwrap_pid;
} launched_t;

typedef struct {
    char workspace_base[PATH_MAX];
    char run_base[PATH_MAX];
    char init_path[PATH_MAX];
    char etc_dir[PATH_MAX]; /* the prepared /etc, "" when it could not be made */
    uid_t host_uid;
    gid_t host_gid;
    at_sandbox_net_t net;
    uint64_t default_disk;
    pthread_mutex_t lock; /* guards launched */
    launched_t *launched;
    size_t n_launched, cap_launched;
    /* the spare thread: keeps SM_LOCAL_SPARES formatted default-size images */
    pthread_t spare_thread;
    int spare_running;
    pthread_mutex_t spare_lock; /* guards spare_wanted, spare_stop */
    pthread_cond_t spare_cond;
    int spare_wanted, spare_stop;
    sm_driver_t table;
} local_t;

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, SM_ERR_MAX, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int64_t now_ms(void)
{
    return at_mono_us() / 1000;
}

/* ---- paths ------------------------------------------------------------------------- */

static int session_dir(const local_t *l, const char *session, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", l->run_base, session);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int sandbox_dir(const local_t *l, const char *session, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s/sandbox", l->run_base, session);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int socket_path(const local_t *l, const char *session, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s/sandbox/init.sock", l->run_base, session);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int check_session(const char *session, char *err)
{
    if (!session || !at_cgroup_name_ok(session))
        return fail(err, "local: bad session name '%s'", session ? session : "(null)");
    return 0;
}

/* mkdir that accepts an existing directory (never a symlink: lstat). */
static int mkdir_exact(const char *path, mode_t mode, char *err)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return fail(err, "local: mkdir %s: %s", path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail(err, "local: %s is not a directory", path);
    return 0;
}

/* The session's volume name, from <run_base>/<session>/volume (host-only). */
static int read_volume_name(const local_t *l, const char *session, char *out, size_t cap)
{
    char path[PATH_MAX];
    if (session_dir(l, session, path, sizeof path) != 0 ||
        strlen(path) + sizeof "/volume" > sizeof path)
        return -1;
    strcat(path, "/volume");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n <= 0)
        return -1;
    out[n] = '\0';
    return at_volume_name_ok(out) ? 0 : -1;
}

static int write_volume_name(const local_t *l, const char *session, const char *volume, char *err)
{
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
    if (session_dir(l, session, dir, sizeof dir) != 0 ||
        snprintf(path, sizeof path, "%s/volume", dir) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.volume.tmp", dir) >= (int)sizeof tmp)
        return fail(err, "local: run dir path too long");
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, "local: create %s: %s", tmp, strerror(errno));
    size_t len = strlen(volume);
    ssize_t w = write(fd, volume, len);
    close(fd);
    if (w != (ssize_t)len || rename(tmp, path) != 0) {
        unlink(tmp);
        return fail(err, "local: write %s: %s", path, strerror(errno));
    }
    return 0;
}

/* ---- launched-sandbox bookkeeping ------------------------------------------------- */

static void launched_add(local_t *l, const char *session, pid_t bwrap_pid)
{
    pthread_mutex_lock(&l->lock);
    if (l->n_launched == l->cap_launched && l->cap_launched < MAX_LAUNCHED) {
        size_t cap = l->cap_launched ? l->cap_launched * 2 : 16;
        launched_t *p = realloc(l->launched, cap * sizeof *p);
        if (p) {
            l->launched = p;
            l->cap_launched = cap;
        }
    }
    if (l->n_launched < l->cap_launched) {
        launched_t *e = &l->launched[l->n_launched++];
        snprintf(e->session, sizeof e->session, "%s", session);
        e->bwrap_pid = bwrap_pid;
    } else {
        at_warn("event=launched_table_full session=%s bwrap_pid=%d", session, (int)bwrap_pid);
    }
    pthread_mutex_unlock(&l->lock);
}

/* Reap finished bwraps (all, or only session's with wait: blocking up to timeout_ms). */
static void reap(local_t *l, const char *session, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < l->n_launched;) {
        launched_t *e = &l->launched[i];
        int mine = session && strcmp(e->session, session) == 0;
        pid_t r;
        for (;;) {
            r = waitpid(e->bwrap_pid, NULL, WNOHANG);
            if (r != 0 || !mine || now_ms() >= deadline)
                break;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (r == e->bwrap_pid || (r < 0 && errno == ECHILD)) {
            l->launched[i] = l->launched[--l->n_launched];
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&l->lock);
}

/* ---- init probes ------------------------------------------------------------------- */

/* Connect to the session's init if it answers within timeout_ms; NULL otherwise. */
static at_initctl_t *init_connect(const local_t *l, const char *session, int timeout_ms, char *msg,
                                  size_t msglen)
{
    char sock[PATH_MAX];
    struct stat st;
    if (socket_path(l, session, sock, sizeof sock) != 0 || lstat(sock, &st) != 0 ||
        !S_ISSOCK(st.st_mode)) {
        if (msg)
            snprintf(msg, msglen, "no init socket");
        return NULL;
    }
    at_initctl_t *c = NULL;
    if (at_initctl_connect(sock, timeout_ms, &c, msg, msglen) != AT_OK)
        return NULL;
    return c;
}

static void fill_usage(const char *session, sm_state_t *out)
{
    at_cgroup_usage_t u;
    char ignore[256];
    if (at_cgroup_usage(session, &u, ignore, sizeof ignore) == AT_OK) {
        out->memory_bytes = (int64_t)u.memory_bytes;
        out->cpu_usage_ns = (int64_t)u.cpu_usage_ns;
        out->pids = (int)u.pids;
        out->oom_kills = (int)u.oom_kills;
    }
}

static void fill_root(const local_t *l, const char *volume, sm_state_t *out)
{
    /* both parts are bounded (PATH_MAX base checked at construction, short name) */
    if (volume && strlen(l->workspace_base) + strlen(volume) + 2 <= sizeof out->root)
        snprintf(out->root, sizeof out->root, "%.3900s/%.130s", l->workspace_base, volume);
}

/* running + pid from the init; usage from the cgroup. */
static void probe_state(local_t *l, const char *session, sm_state_t *out)
{
    char vol[AT_VOLUME_NAME_MAX + 1];
    memset(out, 0, sizeof *out);
    at_initctl_t *c = init_connect(l, session, PROBE_TIMEOUT_MS, NULL, 0);
    if (c) {
        at_initctl_ping_t p;
        if (at_initctl_ping(c, &p, REQ_TIMEOUT_MS, NULL, 0) == AT_OK) {
            out->running = 1;
            out->pid = at_initctl_peer_pid(c); /* --socket: init itself, as the host sees it */
        }
        at_initctl_close(c);
    }
    if (read_volume_name(l, session, vol, sizeof vol) == 0) {
        fill_root(l, vol, out);
        at_volume_usage_t vu;
        char ignore[256];
        if (at_volume_is_mounted(l->workspace_base, vol) &&
            at_volume_usage(l->workspace_base, vol, &vu, ignore, sizeof ignore) == AT_OK) {
            out->disk_used_bytes = (int64_t)vu.used_bytes;
            out->disk_total_bytes = (int64_t)vu.total_bytes;
        }
    }
    fill_usage(session, out);
}

/* ---- create / start ---------------------------------------------------------------- */

static at_cgroup_limits_t cg_limits(const sm_limits_t *s)
{
    at_cgroup_limits_t c = {
        .cpu_millis = s->cpu_millis > 0 ? (uint32_t)s->cpu_millis : 0,
        .memory_mb = s->memory_mb > 0 ? (uint64_t)s->memory_mb : 0,
        .pids_max = s->pids_max > 0 ? (uint32_t)s->pids_max : SM_LOCAL_PIDS_DEFAULT,
    };
    return c;
}

static int check_spec(const sm_spec_t *spec, char *err)
{
    if (!spec || check_session(spec->session, err) != 0)
        return -1;
    if (!spec->volume || !at_volume_name_ok(spec->volume))
        return fail(err, "local: bad volume name '%s'", spec->volume ? spec->volume : "(null)");
    return 0;
}

/* Volume made and mounted (owned by the sandbox uid), cgroup with the limits, the
 * session's run dirs and its volume name recorded. Every step is idempotent. */
static int prepare(local_t *l, const sm_spec_t *spec, char *err)
{
    char e[SM_ERR_MAX - 64], dir[PATH_MAX];
    uint64_t size =
        spec->limits.disk_bytes > 0 ? (uint64_t)spec->limits.disk_bytes : l->default_disk;
    at_err_t rc = at_volume_create(l->workspace_base, spec->volume, size, e, sizeof e);
    if (rc == AT_OK)
        rc =
            at_volume_mount(l->workspace_base, spec->volume, l->host_uid, l->host_gid, e, sizeof e);
    if (rc != AT_OK)
        return fail(err, "local: volume %s: %s", spec->volume, e);
    /* the run dir first: local_list finds the session's cgroup through it */
    if (session_dir(l, spec->session, dir, sizeof dir) != 0)
        return fail(err, "local: run dir path too long");
    if (mkdir_exact(dir, 0755, err) != 0)
        return -1;
    at_cgroup_limits_t lim = cg_limits(&spec->limits);
    if (at_cgroup_create(spec->session, &lim, e, sizeof e) != AT_OK)
        return fail(err, "local: cgroup %s: %s", spec->session, e);
    char cur[AT_VOLUME_NAME_MAX + 1];
    if (read_volume_name(l, spec->session, cur, sizeof cur) != 0 || strcmp(cur, spec->volume) != 0)
        return write_volume_name(l, spec->session, spec->volume, err);
    return 0;
}

/* ---- spare images ------------------------------------------------------------------ */

/* A create of the default size may have taken a spare: wake the refill. */
static void spares_poke(local_t *l)
{
    if (!l->spare_running)
        return;
    pthread_mutex_lock(&l->spare_lock);
    l->spare_wanted = 1;
    pthread_cond_signal(&l->spare_cond);
    pthread_mutex_unlock(&l->spare_lock);
}

/* Formats images ahead of need, off every session's critical path (mkfs is
 * ~10 ms of a ~50 ms create). Wakes when poked, and every 30 s. */
static void *spare_main(void *arg)
{
    local_t *l = arg;
    for (;;) {
        char e[SM_ERR_MAX];
        if (at_volume_fill_spares(l->workspace_base, l->default_disk, SM_LOCAL_SPARES, e,
                                  sizeof e) != AT_OK)
            at_warn("event=volume_spares_failed error=\"%s\"", e);
        pthread_mutex_lock(&l->spare_lock);
        if (!l->spare_wanted && !l->spare_stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 30;
            pthread_cond_timedwait(&l->spare_cond, &l->spare_lock, &until);
        }
        int stop = l->spare_stop;
        l->spare_wanted = 0;
        pthread_mutex_unlock(&l->spare_lock);
        if (stop)
            return NULL;
    }
}

static int local_create(void *self, const sm_spec_t *spec, sm_state_t *out, char *err)
{
    local_t *l = self;
    if (check_spec(spec, err) != 0 || prepare(l, spec, err) != 0)
        return -1;
    spares_poke(l);
    if (out)
        probe_state(l, spec->session, out);
    at_info("event=sandbox_created session=%s volume=%s", spec->session, spec->volume);
    return 0;
}

/* Launch bwrap + init and wait until init answers a ping. */
static int launch(local_t *l, const sm_spec_t *spec, char *err)
{
    char e[SM_ERR_MAX - 64], sbx[PATH_MAX], vol[PATH_MAX], sock[PATH_MAX];
    if (sandbox_dir(l, spec->session, sbx, sizeof sbx) != 0 ||
        socket_path(l, spec->session, sock, sizeof sock) != 0 ||
        snprintf(vol, sizeof vol, "%s/%s", l->workspace_base, spec->volume) >= (int)sizeof vol)
        return fail(err, "local: path too long");
    /* Leftovers of a sandbox that died (kill -9, OOM of init): nothing may survive. */
    if (at_cgroup_kill_all(spec->session, KILL_TIMEOUT_MS, e, sizeof e) != AT_OK)
        return fail(err, "local: clearing cgroup %s: %s", spec->session, e);
    reap(l, spec->session, 0);
    if (mkdir_exact(sbx, 0700, err) != 0)
        return -1;
    unlink(sock); /* stale socket of a killed init: the new init must bind the path */
    at_sandbox_spec_t s = {.session = spec->session,
                           .volume_dir = vol,
                           .run_dir = sbx,
                           .init_path = l->init_path,
                           .etc_dir = l->etc_dir[0] ? l->etc_dir : NULL,
                           .host_uid = l->host_uid,
                           .host_gid = l->host_gid,
                           .net = l->net};
    at_sandbox_proc_t proc;
    if (at_bwrap_launch(&s, &proc, e, sizeof e) != AT_OK)
        return fail(err, "local: launch %s: %s", spec->session, e);
    if (proc.pidfd >= 0)
        close(proc.pidfd);
    launched_add(l, spec->session, proc.bwrap_pid);
    at_initctl_t *c = NULL;
    at_initctl_ping_t p;
    at_err_t rc = at_initctl_connect(sock, SM_LOCAL_START_TIMEOUT_MS, &c, e, sizeof e);
    if (rc == AT_OK)
        rc = at_initctl_ping(c, &p, REQ_TIMEOUT_MS, e, sizeof e);
    if (c)
        at_initctl_close(c);
    if (rc != AT_OK) {
        char ignore[256];
        at_cgroup_kill_all(spec->session, KILL_TIMEOUT_MS, ignore, sizeof ignore);
        reap(l, spec->session, 1000);
        return fail(err, "local: init of %s does not answer: %s", spec->session, e);
    }
    at_info("event=sandbox_started session=%s init_pid=%d", spec->session, (int)proc.init_pid);
    return 0;
}

static int local_start(void *self, const sm_spec_t *spec, sm_state_t *out, char *err)
{
    local_t *l = self;
    if (check_spec(spec, err) != 0)
        return -1;
    reap(l, NULL, 0);
    sm_state_t st;
    probe_state(l, spec->session, &st);
    if (!st.running) {
        if (prepare(l, spec, err) != 0 || launch(l, spec, err) != 0)
            return -1;
        probe_state(l, spec->session, &st);
        if (!st.running)
            return fail(err, "local: sandbox %s exited right after start", spec->session);
    }
    if (out)
        *out = st;
    return 0;
}

/* ---- stop / scale / destroy / state / list ------------------------------------------ */

/* Every process gone (init asked first, then the cgroup killed), bwrap reaped, socket
 * removed; with unmount the volume too. */
static int halt(local_t *l, const char *session, int unmount, char *err)
{
    char e[SM_ERR_MAX - 64], sock[PATH_MAX];
    at_initctl_t *c = init_connect(l, session, PROBE_TIMEOUT_MS, NULL, 0);
    if (c) {
        /* a failure here is fine: the cgroup kill below is the guarantee */
        at_initctl_shutdown(c, SM_LOCAL_STOP_GRACE_MS, SM_LOCAL_STOP_GRACE_MS + 1000, NULL, 0);
        at_initctl_close(c);
    }
    if (at_cgroup_kill_all(session, KILL_TIMEOUT_MS, e, sizeof e) != AT_OK)
        return fail(err, "local: stop %s: %s", session, e);
    reap(l, session, 1000);
    if (socket_path(l, session, sock, sizeof sock) == 0)
        unlink(sock);
    char vol[AT_VOLUME_NAME_MAX + 1];
    if (unmount && read_volume_name(l, session, vol, sizeof vol) == 0 &&
        at_volume_umount(l->workspace_base, vol, UMOUNT_TIMEOUT_MS, e, sizeof e) != AT_OK)
        return fail(err, "local: unmount %s: %s", vol, e);
    return 0;
}

static int local_stop(void *self, const char *session, int unmount, char *err)
{
    local_t *l = self;
    if (check_session(session, err) != 0 || halt(l, session, unmount, err) != 0)
        return -1;
    at_info("event=sandbox_stopped session=%s", session);
    return 0;
}

static int local_scale(void *self, const char *session, const sm_limits_t *limits, char *err)
{
    (void)self;
    char e[SM_ERR_MAX - 64];
    if (check_session(session, err) != 0)
        return -1;
    if (!limits)
        return fail(err, "local: scale %s: no limits", session);
    at_cgroup_limits_t lim = cg_limits(limits);
    if (at_cgroup_set_limits(session, &lim, e, sizeof e) != AT_OK)
        return fail(err, "local: scale %s: %s", session, e);
    at_info("event=sandbox_scaled session=%s cpu_millis=%d memory_mb=%d", session,
            limits->cpu_millis, limits->memory_mb);
    return 0;
}

/* Remove dir/name files and the directory (our own layout only: one level of
 * subdirectory, no symlinks followed). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        int fd = dirfd(d);
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            if (unlinkat(fd, de->d_name, 0) != 0 && (errno == EISDIR || errno == EPERM)) {
                char sub[PATH_MAX];
                if (snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name) < (int)sizeof sub) {
                    struct stat st;
                    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                        remove_dir(sub);
                }
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static int local_destroy(void *self, const char *session, const char *volume,
                         sm_volume_action_t action, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64], dir[PATH_MAX], recorded[AT_VOLUME_NAME_MAX + 1];
    if (check_session(session, err) != 0 || halt(l, session, 0, err) != 0)
        return -1;
    if (at_cgroup_destroy(session, KILL_TIMEOUT_MS, e, sizeof e) != AT_OK)
        return fail(err, "local: destroy cgroup %s: %s", session, e);
    if (!volume && read_volume_name(l, session, recorded, sizeof recorded) == 0)
        volume = recorded;
    if (volume && action != SM_VOLUME_KEEP_MOUNTED) {
        if (!at_volume_name_ok(volume))
            return fail(err, "local: bad volume name '%s'", volume);
        at_err_t rc =
            action == SM_VOLUME_UNMOUNT
                ? at_volume_umount(l->workspace_base, volume, UMOUNT_TIMEOUT_MS, e, sizeof e)
                : at_volume_destroy(l->workspace_base, volume, UMOUNT_TIMEOUT_MS, e, sizeof e);
        if (rc != AT_OK)
            return fail(err, "local: destroy volume %s: %s", volume, e);
    }
    if (session_dir(l, session, dir, sizeof dir) == 0)
        remove_dir(dir);
    at_info("event=sandbox_destroyed session=%s volume=%s volume_action=%s", session,
            volume ? volume : "-",
            action == SM_VOLUME_REMOVE    ? "remove"
            : action == SM_VOLUME_UNMOUNT ? "unmount"
                                          : "keep_mounted");
    return 0;
}

static int local_state(void *self, const char *session, sm_state_t *out, char *err)
{
    local_t *l = self;
    if (check_session(session, err) != 0)
        return -1;
    reap(l, NULL, 0);
    probe_state(l, session, out);
    return 0;
}

/* The sessions of this deployment: those with a run dir under run_base.
 * prepare makes the run dir before the cgroup and destroy removes it last,
 * so every cgroup, sandbox and mount of ours is found through it, and the
 * atelier/ cgroups of another deployment on the same host (another data
 * dir) are never reported, so never taken for orphans. */
static int local_list(void *self, sm_list_fn *fn, void *arg, char *err)
{
    local_t *l = self;
    DIR *d = opendir(l->run_base);
    if (!d)
        return errno == ENOENT ? 0 : fail(err, "local: list %s: %s", l->run_base, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && at_cgroup_name_ok(de->d_name))
            fn(de->d_name, arg);
    closedir(d);
    return 0;
}

static int local_volumes(void *self, sm_list_fn *fn, void *arg, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    char **names = NULL;
    size_t n = 0;
    if (at_volume_list_mounted(l->workspace_base, &names, &n, e, sizeof e) != AT_OK)
        return fail(err, "local: list volumes: %s", e);
    for (size_t i = 0; i < n; i++)
        fn(names[i], arg);
    at_volume_list_free(names, n);
    return 0;
}

static int local_unmount(void *self, const char *volume, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    if (!volume || !at_volume_name_ok(volume))
        return fail(err, "local: bad volume name '%s'", volume ? volume : "(null)");
    if (at_volume_umount(l->workspace_base, volume, UMOUNT_TIMEOUT_MS, e, sizeof e) != AT_OK)
        return fail(err, "local: unmount %s: %s", volume, e);
    at_info("event=volume_unmounted volume=%s", volume);
    return 0;
}

/* ---- exec ------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap, max;
    int truncated;
} outbuf_t;

static int outbuf_init(outbuf_t *b, size_t max)
{
    b->max = max;
    b->cap = max < 4096 ? max + 1 : 4096;
    b->len = 0;
    b->truncated = 0;
    b->buf = malloc(b->cap);
    if (b->buf)
        b->buf[0] = '\0';
    return b->buf ? 0 : -1;
}

/* Keep what fits under max, drop the rest (marked). */
static void outbuf_add(outbuf_t *b, const char *data, size_t n)
{
    size_t room = b->max - b->len;
    if (n > room) {
        b->truncated = 1;
        n = room;
    }
    if (n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->truncated = 1;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

/* Write without SIGPIPE reaching the process: block it for this thread, consume it if
 * the write raised it. */
static ssize_t write_nosigpipe(int fd, const void *p, size_t n)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t w = write(fd, p, n);
    int e = errno;
    if (w < 0 && e == EPIPE) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return w;
}

typedef struct {
    at_initctl_t *c;
    at_initctl_proc_fds_t fds;
    const char *in;
    size_t in_len, in_off;
    outbuf_t out, err;
    int exited, code, sig;
    int64_t exited_at;
} exec_run_t;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Take the exit events waiting on the connection; note ours. */
static void drain_events(exec_run_t *r)
{
    json_t *ev;
    while (!r->exited && at_initctl_read_event(r->c, &ev, 0, NULL, 0) == AT_OK) {
        at_initctl_exit_t x;
        if (at_initctl_exit_from_json(ev, &x) == AT_OK && x.pid == r->fds.pid) {
            r->exited = 1;
            r->code = x.code;
            r->sig = x.signal;
            r->exited_at = now_ms();
        }
        json_decref(ev);
    }
}

/* One poll round over stdin (while there is some to write), stdout, stderr and the
 * init connection (exit event). */
static void exec_poll(exec_run_t *r, int wait_ms)
{
    struct pollfd p[4];
    int *fd[3] = {&r->fds.fds[0], &r->fds.fds[1], &r->fds.fds[2]};
    for (int i = 0; i < 3; i++) {
        p[i].fd = *fd[i];
        p[i].events = i == 0 ? POLLOUT : POLLIN;
        p[i].revents = 0;
    }
    p[3].fd = r->exited ? -1 : at_initctl_fd(r->c);
    p[3].events = POLLIN;
    p[3].revents = 0;
    if (poll(p, 4, wait_ms) <= 0)
        return;
    if (p[0].revents) {
        ssize_t w = write_nosigpipe(*fd[0], r->in + r->in_off, r->in_len - r->in_off);
        if (w > 0)
            r->in_off += (size_t)w;
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || r->in_off >= r->in_len)
            close_fd(fd[0]); /* all written, or the reader is gone: end of file */
    }
    for (int i = 1; i < 3; i++) {
        if (!p[i].revents)
            continue;
        char buf[16384];
        ssize_t n = read(*fd[i], buf, sizeof buf);
        if (n > 0)
            outbuf_add(i == 1 ? &r->out : &r->err, buf, (size_t)n);
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            close_fd(fd[i]);
    }
    if (p[3].revents)
        drain_events(r);
}

/* The exit record when the event was lost (a dropped client queue): the exits list. */
static void exit_from_records(exec_run_t *r)
{
    at_initctl_exit_t *x = NULL;
    size_t n = 0;
    bool more = false;
    if (at_initctl_exits(r->c, 0, &x, &n, &more, NULL, REQ_TIMEOUT_MS, NULL, 0) != AT_OK)
        return;
    for (size_t i = 0; i < n; i++)
        if (x[i].pid == r->fds.pid) {
            r->exited = 1;
            r->code = x[i].code;
            r->sig = x[i].signal;
        }
    free(x);
}

static void set_nonblock(int fd)
{
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Read until both outputs end and the exit is known, or the deadline. */
static void exec_loop(exec_run_t *r, int64_t deadline, int *timed_out)
{
    int killed = 0;
    for (;;) {
        int open_out = r->fds.fds[1] >= 0 || r->fds.fds[2] >= 0;
        if (!open_out && r->exited)
            return;
        int64_t now = now_ms();
        if (r->exited && now - r->exited_at >= EXIT_GRACE_MS)
            return; /* a background job holds the pipes: stop reading */
        if (now >= deadline) {
            if (killed)
                return;
            /* the whole process group: bash and what it started */
            at_initctl_signal(r->c, r->fds.pid, SIGKILL, true, REQ_TIMEOUT_MS, NULL, 0);
            *timed_out = killed = 1;
            deadline = now_ms() + KILL_DRAIN_MS;
            continue;
        }
        int64_t wait = deadline - now;
        if (r->exited && wait > EXIT_GRACE_MS)
            wait = EXIT_GRACE_MS;
        if (!open_out && !r->exited && wait > 50)
            wait = 50; /* outputs closed: the exit event is due any moment */
        exec_poll(r, (int)wait);
    }
}

static int local_exec(void *self, const char *session, const sm_exec_t *req, sm_exec_result_t *res,
                      char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    if (check_session(session, err) != 0)
        return -1;
    if (!req || !req->command)
        return fail(err, "local: exec %s: no command", session);
    int64_t t0 = now_ms();
    exec_run_t r;
    memset(&r, 0, sizeof r);
    size_t max = req->output_max ? req->output_max : SM_LOCAL_OUTPUT_MAX_DEFAULT;
    if (outbuf_init(&r.out, max) != 0 || outbuf_init(&r.err, max) != 0) {
        free(r.out.buf);
        return fail(err, "local: exec %s: out of memory", session);
    }
    r.c = init_connect(l, session, PROBE_TIMEOUT_MS * 4, e, sizeof e);
    if (!r.c) {
        free(r.out.buf);
        free(r.err.buf);
        return fail(err, "local: exec %s: sandbox not running: %s", session, e);
    }
    const char *argv[] = {"/bin/bash", "-lc", req->command, NULL};
    at_initctl_spawn_t sp = {.argv = argv};
    int rc = 0;
    if (at_initctl_spawn(r.c, &sp, &r.fds, REQ_TIMEOUT_MS, e, sizeof e) != AT_OK) {
        rc = fail(err, "local: exec %s: spawn: %s", session, e);
    } else {
        /* init's copy of stdin goes now; ours when the data is written */
        at_initctl_close_stdin(r.c, r.fds.pid, REQ_TIMEOUT_MS, NULL, 0);
        r.in = req->stdin_data;
        r.in_len = req->stdin_data ? req->stdin_len : 0;
        if (r.in_len == 0)
            close_fd(&r.fds.fds[0]);
        for (int i = 0; i < 3; i++)
            set_nonblock(r.fds.fds[i]);
        drain_events(&r);
        int timeout = req->timeout_ms > 0 ? req->timeout_ms : SM_LOCAL_EXEC_TIMEOUT_DEFAULT_MS;
        exec_loop(&r, t0 + timeout, &res->timed_out);
        if (!r.exited)
            exit_from_records(&r);
        for (int i = 0; i < 3; i++)
            close_fd(&r.fds.fds[i]);
    }
    at_initctl_close(r.c);
    res->out = r.out.buf;
    res->out_len = r.out.len;
    res->out_truncated = r.out.truncated;
    res->err = r.err.buf;
    res->err_len = r.err.len;
    res->err_truncated = r.err.truncated;
    res->signal = r.exited ? r.sig : 0;
    res->exit_code = r.exited && r.sig == 0 && !res->timed_out ? r.code : -1;
    res->duration_ms = now_ms() - t0;
    return rc;
}

void sm_local_exec_result_free(sm_exec_result_t *res)
{
    if (!res)
        return;
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
    res->out_len = res->err_len = 0;
}

/* ---- terminals --------------------------------------------------------------------- */

/* A session's exit events: a connection to its init kept open, read on the caller's loop. */
struct sm_exits {
    at_initctl_t *c;
};

static int local_spawn_pty(void *self, const char *session, const sm_pty_spec_t *spec,
                           sm_pty_t *out, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    out->pid = 0;
    out->master = -1;
    if (check_session(session, err) != 0)
        return -1;
    if (!spec || !spec->argv || !spec->argv[0] || spec->cols < 1 || spec->cols > USHRT_MAX ||
        spec->rows < 1 || spec->rows > USHRT_MAX)
        return fail(err, "local: spawn_pty %s: needs a program and a size", session);
    at_initctl_t *c = init_connect(l, session, PROBE_TIMEOUT_MS * 4, e, sizeof e);
    if (!c)
        return fail(err, "local: spawn_pty %s: sandbox not running: %s", session, e);
    at_initctl_spawn_t sp = {.argv = spec->argv,
                             .env = spec->env,
                             .cwd = spec->cwd,
                             .pty = true,
                             .cols = (unsigned short)spec->cols,
                             .rows = (unsigned short)spec->rows};
    at_initctl_proc_fds_t fds;
    at_err_t rc = at_initctl_spawn(c, &sp, &fds, REQ_TIMEOUT_MS, e, sizeof e);
    at_initctl_close(c);
    if (rc != AT_OK)
        return fail(err, "local: spawn_pty %s %s: %s", session, spec->argv[0], e);
    set_nonblock(fds.fds[0]); /* shared with init's copy, which never reads it */
    out->pid = fds.pid;
    out->master = fds.fds[0];
    return 0;
}

/* The exit status init recorded for pid, -1 when it is not among the records it
 * returns (the oldest unacknowledged ones). */
static int recorded_exit(at_initctl_t *c, pid_t pid)
{
    at_initctl_exit_t *x = NULL;
    size_t n = 0;
    bool more = false;
    int code = -1;
    if (at_initctl_exits(c, 0, &x, &n, &more, NULL, REQ_TIMEOUT_MS, NULL, 0) != AT_OK)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (x[i].pid == pid)
            code = x[i].code; /* the latest record of that pid */
    free(x);
    return code;
}

static int local_attach_pty(void *self, const char *session, pid_t pid, sm_pty_t *out, int *code,
                            char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    out->pid = 0;
    out->master = -1;
    *code = -1;
    if (check_session(session, err) != 0)
        return -1;
    at_initctl_t *c = init_connect(l, session, PROBE_TIMEOUT_MS * 4, e, sizeof e);
    if (!c)
        return fail(err, "local: attach_pty %s: sandbox not running: %s", session, e);
    at_initctl_proc_fds_t fds;
    at_err_t rc = at_initctl_attach(c, pid, &fds, REQ_TIMEOUT_MS, e, sizeof e);
    if (rc == AT_ENOTFOUND) {
        *code = recorded_exit(c, pid);
        at_initctl_close(c);
        return 1;
    }
    at_initctl_close(c);
    if (rc != AT_OK)
        return fail(err, "local: attach_pty %s pid %d: %s", session, (int)pid, e);
    if (!fds.pty) {
        for (int i = 0; i < AT_INITCTL_MAX_FDS; i++)
            close_fd(&fds.fds[i]);
        return fail(err, "local: attach_pty %s: process %d is not on a terminal", session,
                    (int)pid);
    }
    set_nonblock(fds.fds[0]);
    out->pid = fds.pid;
    out->master = fds.fds[0];
    return 0;
}

static int local_signal(void *self, const char *session, pid_t pid, int sig, int group, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    if (check_session(session, err) != 0)
        return -1;
    at_initctl_t *c = init_connect(l, session, PROBE_TIMEOUT_MS * 4, e, sizeof e);
    if (!c)
        return fail(err, "local: signal %s: sandbox not running: %s", session, e);
    at_err_t rc = at_initctl_signal(c, pid, sig, group != 0, REQ_TIMEOUT_MS, e, sizeof e);
    at_initctl_close(c);
    if (rc == AT_ENOTFOUND)
        return 1;
    if (rc != AT_OK)
        return fail(err, "local: signal %d to %s pid %d: %s", sig, session, (int)pid, e);
    return 0;
}

static int local_exits_open(void *self, const char *session, sm_exits_t **out, char *err)
{
    local_t *l = self;
    char e[SM_ERR_MAX - 64];
    *out = NULL;
    if (check_session(session, err) != 0)
        return -1;
    sm_exits_t *x = calloc(1, sizeof *x);
    if (!x)
        return fail(err, "local: exits %s: out of memory", session);
    x->c = init_connect(l, session, PROBE_TIMEOUT_MS * 4, e, sizeof e);
    if (!x->c) {
        free(x);
        return fail(err, "local: exits %s: sandbox not running: %s", session, e);
    }
    *out = x;
    return 0;
}

static int local_exits_fd(const sm_exits_t *x)
{
    return at_initctl_fd(x->c);
}

/* Never blocks: at_initctl_read_event with timeout 0 reads only what is queued. */
static int local_exits_next(sm_exits_t *x, pid_t *pid, int *code)
{
    for (;;) {
        json_t *ev;
        at_err_t rc = at_initctl_read_event(x->c, &ev, 0, NULL, 0);
        if (rc == AT_ETIMEOUT)
            return 0;
        if (rc != AT_OK)
            return -1;
        at_initctl_exit_t ex;
        int ok = at_initctl_exit_from_json(ev, &ex) == AT_OK;
        json_decref(ev);
        if (ok) {
            *pid = ex.pid;
            *code = ex.code;
            return 1;
        }
    }
}

static void local_exits_close(sm_exits_t *x)
{
    if (!x)
        return;
    at_initctl_close(x->c);
    free(x);
}

/* ---- construction ----------------------------------------------------------------- */

static int copy_path(char *dst, const char *src, const char *what, char *err)
{
    if (!src || src[0] != '/')
        return fail(err, "local: %s must be an absolute path", what);
    if (snprintf(dst, PATH_MAX, "%s", src) >= PATH_MAX)
        return fail(err, "local: %s too long", what);
    size_t n = strlen(dst);
    while (n > 1 && dst[n - 1] == '/')
        dst[--n] = '\0';
    return 0;
}

/* mkdir -p, 0755 (the sandbox's host uid must traverse the run base). */
static int mkdir_p(const char *path, char *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return fail(err, "local: mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return fail(err, "local: mkdir %s: %s", tmp, strerror(errno));
    return 0;
}

sm_driver_t *sm_local_driver_new(const sm_local_config_t *cfg, char *err)
{
    if (!cfg) {
        fail(err, "local: no configuration");
        return NULL;
    }
    local_t *l = calloc(1, sizeof *l);
    if (!l) {
        fail(err, "local: out of memory");
        return NULL;
    }
    if (copy_path(l->workspace_base, cfg->workspace_base, "workspace base", err) != 0 ||
        copy_path(l->run_base, cfg->run_base, "run base", err) != 0 ||
        copy_path(l->init_path, cfg->init_path, "init path", err) != 0 ||
        mkdir_p(l->run_base, err) != 0) {
        free(l);
        return NULL;
    }
    if (access(l->init_path, X_OK) != 0) {
        fail(err, "local: init %s: %s", l->init_path, strerror(errno));
        free(l);
        return NULL;
    }
    l->host_uid = cfg->host_uid ? cfg->host_uid : SM_LOCAL_HOST_ID_DEFAULT;
    l->host_gid = cfg->host_gid ? cfg->host_gid : SM_LOCAL_HOST_ID_DEFAULT;
    l->net = cfg->net;
    l->default_disk = cfg->default_disk_bytes ? cfg->default_disk_bytes : AT_VOLUME_DEFAULT_SIZE;
    char e[SM_ERR_MAX - 64];
    if (at_bwrap_prepare_etc(l->run_base, l->net, l->etc_dir, sizeof l->etc_dir, e, sizeof e) !=
        AT_OK) {
        /* slower launches (one bind per /etc entry), same sandbox */
        at_warn("event=etc_copy_failed error=\"%s\"", e);
        l->etc_dir[0] = '\0';
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->spare_lock, NULL);
    pthread_cond_init(&l->spare_cond, NULL);
    if (cfg->spares && pthread_create(&l->spare_thread, NULL, spare_main, l) == 0)
        l->spare_running = 1;
    l->table = (sm_driver_t){.name = "local",
                             .self = l,
                             .create = local_create,
                             .start = local_start,
                             .stop = local_stop,
                             .scale = local_scale,
                             .exec = local_exec,
                             .destroy = local_destroy,
                             .state = local_state,
                             .list = local_list,
                             .volumes = local_volumes,
                             .unmount = local_unmount,
                             .spawn_pty = local_spawn_pty,
                             .attach_pty = local_attach_pty,
                             .signal = local_signal,
                             .exits_open = local_exits_open,
                             .exits_fd = local_exits_fd,
                             .exits_next = local_exits_next,
                             .exits_close = local_exits_close};
    return &l->table;
}

void sm_local_driver_free(sm_driver_t *d)
{
    if (!d)
        return;
    local_t *l = d->self;
    if (l->spare_running) {
        pthread_mutex_lock(&l->spare_lock);
        l->spare_stop = 1;
        pthread_cond_signal(&l->spare_cond);
        pthread_mutex_unlock(&l->spare_lock);
        pthread_join(l->spare_thread, NULL);
    }
    pthread_cond_destroy(&l->spare_cond);
    pthread_mutex_destroy(&l->spare_lock);
    pthread_mutex_destroy(&l->lock);
    free(l->launched);
    free(l);
}
