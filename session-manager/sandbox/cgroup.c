/*
 * Per-session cgroups on v1 (one directory per controller hierarchy) and v2
 * (one directory). See cgroup.h for the model; the code here is file I/O on
 * the kernel's cgroup files, one function per concern.
 */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "sbx_util.h"

#define ROOT_MAX 256
#define PATH_CAP 768
#define CFS_PERIOD_US 100000
/* v1 reports "no memory limit" as PAGE_COUNTER_MAX pages: anything this large is unlimited. */
#define UNLIMITED_BYTES (1ULL << 62)
#define V2_DEFAULT_ROOT "/sys/fs/cgroup"
#define MAX_LIST 100000

/* v1 controllers we use; a hierarchy may carry several (cpu,cpuacct). */
enum { C_CPU, C_CPUACCT, C_MEMORY, C_PIDS, C_FREEZER, C_COUNT };
static const char *const ctl_names[C_COUNT] = {"cpu", "cpuacct", "memory", "pids", "freezer"};

typedef struct {
    at_cgroup_mode_t mode;
    int require_controllers; /* 0 only under at_cgroup_force_mode (tests) */
    char v2_root[ROOT_MAX];
    char ctl[C_COUNT][ROOT_MAX]; /* v1 mount point per controller ("" = absent) */
    char hier[AT_CGROUP_MAX_FDS][ROOT_MAX];
    size_t nhier; /* distinct v1 mount points, or 1 (v2_root) */
} cg_ctx_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_ready;
static cg_ctx_t g_ctx;

/* ---- detection ---------------------------------------------------------- */

static int v1_mount_cb(const sbx_mount_t *m, void *arg)
{
    cg_ctx_t *c = arg;
    if (strcmp(m->fstype, "cgroup") != 0 || strlen(m->mount_point) >= ROOT_MAX)
        return 0;
    for (int i = 0; i < C_COUNT; i++)
        if (c->ctl[i][0] == '\0' && sbx_opt_has(m->super_opts, ctl_names[i]))
            at_strlcpy(c->ctl[i], m->mount_point, ROOT_MAX);
    return 0;
}

/* Distinct mount points of the v1 controllers found, so co-mounted controllers
 * get one directory. */
static void v1_collect_hierarchies(cg_ctx_t *c)
{
    c->nhier = 0;
    for (int i = 0; i < C_COUNT; i++) {
        if (c->ctl[i][0] == '\0')
            continue;
        size_t j = 0;
        while (j < c->nhier && strcmp(c->hier[j], c->ctl[i]) != 0)
            j++;
        if (j == c->nhier && c->nhier < AT_CGROUP_MAX_FDS)
            at_strlcpy(c->hier[c->nhier++], c->ctl[i], ROOT_MAX);
    }
}

static void detect(cg_ctx_t *c)
{
    memset(c, 0, sizeof *c);
    c->require_controllers = 1;
    struct statfs sf;
    if (statfs(V2_DEFAULT_ROOT, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
        c->mode = AT_CGROUP_V2;
        at_strlcpy(c->v2_root, V2_DEFAULT_ROOT, sizeof c->v2_root);
        at_strlcpy(c->hier[0], V2_DEFAULT_ROOT, ROOT_MAX);
        c->nhier = 1;
        return;
    }
    if (sbx_mountinfo_scan(v1_mount_cb, c) != 0)
        return;
    if (c->ctl[C_CPU][0] && c->ctl[C_MEMORY][0] && c->ctl[C_PIDS][0] && c->ctl[C_FREEZER][0]) {
        c->mode = AT_CGROUP_V1;
        v1_collect_hierarchies(c);
    }
}

/* Snapshot of the context: detection once, then a copy per call so no lock is
 * held during file I/O. */
static void ctx_get(cg_ctx_t *out)
{
    pthread_mutex_lock(&g_lock);
    if (!g_ready) {
        detect(&g_ctx);
        g_ready = 1;
        at_info("msg=cgroup_detected mode=%s hierarchies=%zu",
                g_ctx.mode == AT_CGROUP_V2   ? "v2"
                : g_ctx.mode == AT_CGROUP_V1 ? "v1"
                                             : "none",
                g_ctx.nhier);
    }
    *out = g_ctx;
    pthread_mutex_unlock(&g_lock);
}

at_cgroup_mode_t at_cgroup_mode(void)
{
    cg_ctx_t c;
    ctx_get(&c);
    return c.mode;
}

at_err_t at_cgroup_force_mode(at_cgroup_mode_t mode, const char *v2_root, int require_controllers,
                              char *errbuf, size_t errlen)
{
    cg_ctx_t c;
    if (mode == AT_CGROUP_NONE) {
        detect(&c); /* back to what the host has */
    } else if (mode == AT_CGROUP_V2) {
        if (!v2_root || strlen(v2_root) >= ROOT_MAX)
            return sbx_fail(errbuf, errlen, AT_EINVAL, "cgroup v2 root missing or too long");
        memset(&c, 0, sizeof c);
        c.mode = AT_CGROUP_V2;
        c.require_controllers = require_controllers;
        at_strlcpy(c.v2_root, v2_root, sizeof c.v2_root);
        at_strlcpy(c.hier[0], v2_root, ROOT_MAX);
        c.nhier = 1;
    } else {
        return sbx_fail(errbuf, errlen, AT_EINVAL, "cgroup: only v2 can be forced");
    }
    pthread_mutex_lock(&g_lock);
    g_ctx = c;
    g_ready = 1;
    pthread_mutex_unlock(&g_lock);
    return AT_OK;
}

/* ---- paths and small helpers ------------------------------------------- */

int at_cgroup_name_ok(const char *name)
{
    if (!name)
        return 0;
    size_t len = strlen(name);
    if (len == 0 || len > AT_CGROUP_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (const char *p = name; *p; p++) {
        char ch = *p;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.' || ch == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

/* <hier>/atelier/<name>[/<file>] */
static void gpath(const char *hier, const char *name, const char *file, char *out, size_t cap)
{
    if (file)
        snprintf(out, cap, "%s/%s/%s/%s", hier, AT_CGROUP_PARENT, name, file);
    else
        snprintf(out, cap, "%s/%s/%s", hier, AT_CGROUP_PARENT, name);
}

/* The directory holding controller ctl's files (v2: the one directory). */
static const char *hier_of(const cg_ctx_t *c, int ctl)
{
    if (c->mode == AT_CGROUP_V2)
        return c->v2_root;
    return c->ctl[ctl][0] ? c->ctl[ctl] : NULL;
}

static at_err_t begin(cg_ctx_t *c, const char *name, char *errbuf, size_t errlen)
{
    ctx_get(c);
    if (c->mode == AT_CGROUP_NONE)
        return sbx_fail(errbuf, errlen, AT_ECONFIG,
                        "cgroup: no usable hierarchy (need v2 at /sys/fs/cgroup or v1 "
                        "cpu, memory, pids and freezer)");
    if (!at_cgroup_name_ok(name))
        return sbx_fail(errbuf, errlen, AT_EINVAL, "cgroup: invalid name '%s'",
                        name ? name : "(null)");
    return AT_OK;
}

static at_err_t write_ctl(const cg_ctx_t *c, int ctl, const char *name, const char *file,
                          const char *value, char *errbuf, size_t errlen)
{
    const char *h = hier_of(c, ctl);
    if (!h)
        return AT_OK;
    char path[PATH_CAP];
    gpath(h, name, file, path, sizeof path);
    if (sbx_write_file(path, value) == 0)
        return AT_OK;
    if (errno == ENOENT && !c->require_controllers)
        return AT_OK;
    return sbx_fail_errno(errbuf, errlen, errno, "write %s=%s", path, value);
}

/* Read a number; an absent file counts as 0 only when controllers are optional. */
static at_err_t read_ctl(const cg_ctx_t *c, int ctl, const char *name, const char *file,
                         const char *key, uint64_t *out, char *errbuf, size_t errlen)
{
    *out = 0;
    const char *h = hier_of(c, ctl);
    if (!h)
        return AT_OK;
    char path[PATH_CAP];
    gpath(h, name, file, path, sizeof path);
    int rc = key ? sbx_read_keyed_u64(path, key, out) : sbx_read_u64(path, out);
    if (rc == 0)
        return AT_OK;
    if (errno == ENOENT && !c->require_controllers)
        return AT_OK;
    return sbx_fail_errno(errbuf, errlen, errno, "read %s%s%s", path, key ? " " : "",
                          key ? key : "");
}

static int file_exists(const cg_ctx_t *c, int ctl, const char *name, const char *file)
{
    const char *h = hier_of(c, ctl);
    if (!h)
        return 0;
    char path[PATH_CAP];
    gpath(h, name, file, path, sizeof path);
    return access(path, F_OK) == 0;
}

static at_err_t mkdir_ok(const char *path, char *errbuf, size_t errlen)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return AT_OK;
    return sbx_fail_errno(errbuf, errlen, errno, "mkdir %s", path);
}

/* ---- v2 controller delegation ------------------------------------------ */

/* Enable cpu, memory and pids for the children of dir (its subtree_control),
 * each only if not enabled yet, so a running host is written to once. */
static at_err_t v2_enable_controllers(const cg_ctx_t *c, const char *dir, char *errbuf,
                                      size_t errlen)
{
    static const char *const want[] = {"cpu", "memory", "pids"};
    char path[PATH_CAP], avail[512], enabled[512];
    snprintf(path, sizeof path, "%s/cgroup.controllers", dir);
    if (sbx_read_file(path, avail, sizeof avail) < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
    snprintf(path, sizeof path, "%s/cgroup.subtree_control", dir);
    if (sbx_read_file(path, enabled, sizeof enabled) < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
    /* both files are space-separated; reuse the comma matcher on a copy */
    for (char *p = avail; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = ',';
    for (char *p = enabled; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = ',';
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (sbx_opt_has(enabled, want[i]))
            continue;
        if (!sbx_opt_has(avail, want[i])) {
            if (!c->require_controllers)
                continue;
            return sbx_fail(errbuf, errlen, AT_ECONFIG,
                            "cgroup v2: controller %s not available in %s", want[i], dir);
        }
        char val[32];
        snprintf(val, sizeof val, "+%s", want[i]);
        if (sbx_write_file(path, val) != 0) {
            /* v2's "no internal processes" rule: typical inside a container whose
             * processes sit in its cgroup namespace root */
            if (errno == EBUSY)
                return sbx_fail(errbuf, errlen, AT_ECONFIG,
                                "write %s=%s: Device or resource busy (%s has processes of its "
                                "own; run the session-manager in a leaf cgroup)",
                                path, val, dir);
            return sbx_fail_errno(errbuf, errlen, errno, "write %s=%s", path, val);
        }
    }
    return AT_OK;
}

/* ---- create / limits ---------------------------------------------------- */

at_err_t at_cgroup_create(const char *name, const at_cgroup_limits_t *limits, char *errbuf,
                          size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    char path[PATH_CAP];
    if (c.mode == AT_CGROUP_V2) {
        snprintf(path, sizeof path, "%s/%s", c.v2_root, AT_CGROUP_PARENT);
        if ((err = v2_enable_controllers(&c, c.v2_root, errbuf, errlen)) ||
            (err = mkdir_ok(path, errbuf, errlen)) ||
            (err = v2_enable_controllers(&c, path, errbuf, errlen)))
            return err;
        gpath(c.v2_root, name, NULL, path, sizeof path);
        if ((err = mkdir_ok(path, errbuf, errlen)))
            return err;
    } else {
        for (size_t i = 0; i < c.nhier; i++) {
            /* twice: a cleanup elsewhere may rmdir an empty parent between our two mkdirs */
            for (int attempt = 0; attempt < 2; attempt++) {
                snprintf(path, sizeof path, "%s/%s", c.hier[i], AT_CGROUP_PARENT);
                if ((err = mkdir_ok(path, errbuf, errlen)))
                    return err;
                gpath(c.hier[i], name, NULL, path, sizeof path);
                err = mkdir_ok(path, errbuf, errlen);
                if (err != AT_ENOTFOUND)
                    break;
            }
            if (err)
                return err;
        }
    }
    static const at_cgroup_limits_t none = {0, 0, 0};
    return at_cgroup_set_limits(name, limits ? limits : &none, errbuf, errlen);
}

static at_err_t set_cpu(const cg_ctx_t *c, const char *name, uint32_t millis, char *errbuf,
                        size_t errlen)
{
    char val[64];
    if (c->mode == AT_CGROUP_V2) {
        if (millis)
            snprintf(val, sizeof val, "%llu %d", (unsigned long long)millis * CFS_PERIOD_US / 1000,
                     CFS_PERIOD_US);
        else
            snprintf(val, sizeof val, "max %d", CFS_PERIOD_US);
        return write_ctl(c, C_CPU, name, "cpu.max", val, errbuf, errlen);
    }
    snprintf(val, sizeof val, "%d", CFS_PERIOD_US);
    at_err_t err = write_ctl(c, C_CPU, name, "cpu.cfs_period_us", val, errbuf, errlen);
    if (err)
        return err;
    if (millis)
        snprintf(val, sizeof val, "%llu", (unsigned long long)millis * CFS_PERIOD_US / 1000);
    else
        snprintf(val, sizeof val, "-1");
    return write_ctl(c, C_CPU, name, "cpu.cfs_quota_us", val, errbuf, errlen);
}

static at_err_t set_pids(const cg_ctx_t *c, const char *name, uint32_t max, char *errbuf,
                         size_t errlen)
{
    char val[32];
    if (max)
        snprintf(val, sizeof val, "%u", max);
    else
        snprintf(val, sizeof val, "max");
    return write_ctl(c, C_PIDS, name, "pids.max", val, errbuf, errlen);
}

/* v1: memory.memsw.limit_in_bytes (memory + swap) must stay >= memory.limit_in_bytes at
 * every step, so raise memsw first when growing and lower it last when shrinking.
 * Without memsw (swap accounting off) swappiness 0 keeps the group out of swap. */
static at_err_t set_memory_v1(const cg_ctx_t *c, const char *name, uint64_t mb, char *errbuf,
                              size_t errlen)
{
    uint64_t cur = 0;
    at_err_t err = read_ctl(c, C_MEMORY, name, "memory.limit_in_bytes", NULL, &cur, errbuf, errlen);
    if (err)
        return err;
    uint64_t want = mb ? mb << 20 : UINT64_MAX;
    char val[32];
    if (mb)
        snprintf(val, sizeof val, "%llu", (unsigned long long)want);
    else
        snprintf(val, sizeof val, "-1");
    int memsw = file_exists(c, C_MEMORY, name, "memory.memsw.limit_in_bytes");
    int growing = want >= cur; /* an unlimited current value reads as huge */
    if (memsw && growing &&
        (err = write_ctl(c, C_MEMORY, name, "memory.memsw.limit_in_bytes", val, errbuf, errlen)))
        return err;
    err = write_ctl(c, C_MEMORY, name, "memory.limit_in_bytes", val, errbuf, errlen);
    if (err == AT_EBUSY) {
        uint64_t used = 0;
        char ignore[8];
        read_ctl(c, C_MEMORY, name, "memory.usage_in_bytes", NULL, &used, ignore, sizeof ignore);
        return sbx_fail(errbuf, errlen, AT_EBUSY,
                        "cgroup %s: memory limit %llu MiB is below what the group uses (%llu "
                        "MiB) and the kernel could not reclaim enough; limit left unchanged",
                        name, (unsigned long long)mb, (unsigned long long)(used >> 20));
    }
    if (err)
        return err;
    if (memsw && !growing)
        return write_ctl(c, C_MEMORY, name, "memory.memsw.limit_in_bytes", val, errbuf, errlen);
    if (!memsw)
        return write_ctl(c, C_MEMORY, name, "memory.swappiness", "0", errbuf, errlen);
    return AT_OK;
}

/* v2: writing memory.max below usage makes the kernel OOM-kill until it fits.
 * A lower limit therefore goes through memory.high first (reclaim, throttle,
 * never kill); only if usage then fits is memory.max written. */
static at_err_t set_memory_v2(const cg_ctx_t *c, const char *name, uint64_t mb, char *errbuf,
                              size_t errlen)
{
    if (!file_exists(c, C_MEMORY, name, "memory.max")) {
        if (!c->require_controllers)
            return AT_OK;
        return sbx_fail(errbuf, errlen, AT_ECONFIG, "cgroup %s: memory controller not enabled",
                        name);
    }
    at_err_t err;
    if (file_exists(c, C_MEMORY, name, "memory.swap.max") &&
        (err = write_ctl(c, C_MEMORY, name, "memory.swap.max", "0", errbuf, errlen)))
        return err;
    if (!mb) {
        if ((err = write_ctl(c, C_MEMORY, name, "memory.max", "max", errbuf, errlen)))
            return err;
        return write_ctl(c, C_MEMORY, name, "memory.high", "max", errbuf, errlen);
    }
    uint64_t want = mb << 20, cur_max = 0, used = 0;
    if ((err = read_ctl(c, C_MEMORY, name, "memory.max", NULL, &cur_max, errbuf, errlen)))
        return err;
    char val[32];
    snprintf(val, sizeof val, "%llu", (unsigned long long)want);
    if (want < cur_max) {
        if ((err = write_ctl(c, C_MEMORY, name, "memory.high", val, errbuf, errlen)))
            return err;
        if ((err = read_ctl(c, C_MEMORY, name, "memory.current", NULL, &used, errbuf, errlen)))
            return err;
        if (used > want) {
            char ignore[8];
            write_ctl(c, C_MEMORY, name, "memory.high", "max", ignore, sizeof ignore);
            return sbx_fail(errbuf, errlen, AT_EBUSY,
                            "cgroup %s: memory limit %llu MiB is below what the group uses "
                            "(%llu MiB) after reclaim; limit left unchanged",
                            name, (unsigned long long)mb, (unsigned long long)(used >> 20));
        }
    }
    if ((err = write_ctl(c, C_MEMORY, name, "memory.max", val, errbuf, errlen)))
        return err;
    return write_ctl(c, C_MEMORY, name, "memory.high", "max", errbuf, errlen);
}

at_err_t at_cgroup_set_limits(const char *name, const at_cgroup_limits_t *limits, char *errbuf,
                              size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    if (!limits)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "cgroup %s: limits missing", name);
    /* memory first: it is the one that can refuse, and then nothing else changed */
    if (c.mode == AT_CGROUP_V2)
        err = set_memory_v2(&c, name, limits->memory_mb, errbuf, errlen);
    else
        err = set_memory_v1(&c, name, limits->memory_mb, errbuf, errlen);
    if (err)
        return err;
    if ((err = set_cpu(&c, name, limits->cpu_millis, errbuf, errlen)))
        return err;
    return set_pids(&c, name, limits->pids_max, errbuf, errlen);
}

static at_err_t get_cpu(const cg_ctx_t *c, const char *name, uint32_t *millis, char *errbuf,
                        size_t errlen)
{
    *millis = 0;
    const char *h = hier_of(c, C_CPU);
    char path[PATH_CAP], buf[64];
    if (c->mode == AT_CGROUP_V2) {
        gpath(h, name, "cpu.max", path, sizeof path);
        if (sbx_read_file(path, buf, sizeof buf) < 0) {
            if (errno == ENOENT && !c->require_controllers)
                return AT_OK;
            return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
        }
        unsigned long long quota = 0, period = 0;
        if (sscanf(buf, "%llu %llu", &quota, &period) == 2 && period > 0)
            *millis = (uint32_t)(quota * 1000 / period);
        return AT_OK;
    }
    gpath(h, name, "cpu.cfs_quota_us", path, sizeof path);
    if (sbx_read_file(path, buf, sizeof buf) < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
    long long quota = strtoll(buf, NULL, 10);
    uint64_t period = CFS_PERIOD_US;
    at_err_t err = read_ctl(c, C_CPU, name, "cpu.cfs_period_us", NULL, &period, errbuf, errlen);
    if (err)
        return err;
    if (quota > 0 && period > 0)
        *millis = (uint32_t)((uint64_t)quota * 1000 / period);
    return AT_OK;
}

at_err_t at_cgroup_get_limits(const char *name, at_cgroup_limits_t *out, char *errbuf,
                              size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    memset(out, 0, sizeof *out);
    uint64_t mem = 0, pids = 0;
    const char *memfile = c.mode == AT_CGROUP_V2 ? "memory.max" : "memory.limit_in_bytes";
    if ((err = read_ctl(&c, C_MEMORY, name, memfile, NULL, &mem, errbuf, errlen)) ||
        (err = read_ctl(&c, C_PIDS, name, "pids.max", NULL, &pids, errbuf, errlen)) ||
        (err = get_cpu(&c, name, &out->cpu_millis, errbuf, errlen)))
        return err;
    out->memory_mb = mem >= UNLIMITED_BYTES ? 0 : mem >> 20;
    out->pids_max = pids > UINT32_MAX ? 0 : (uint32_t)pids;
    return AT_OK;
}

/* ---- membership ---------------------------------------------------------- */

at_err_t at_cgroup_attach(const char *name, pid_t pid, char *errbuf, size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    char val[32], path[PATH_CAP];
    snprintf(val, sizeof val, "%d", pid > 0 ? (int)pid : 0);
    for (size_t i = 0; i < c.nhier; i++) {
        gpath(c.hier[i], name, "cgroup.procs", path, sizeof path);
        if (sbx_write_file(path, val) != 0)
            return sbx_fail_errno(errbuf, errlen, errno, "write %s=%s", path, val);
    }
    return AT_OK;
}

at_err_t at_cgroup_open_procs(const char *name, int fds[AT_CGROUP_MAX_FDS], size_t *n, char *errbuf,
                              size_t errlen)
{
    *n = 0;
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    char path[PATH_CAP];
    for (size_t i = 0; i < c.nhier; i++) {
        gpath(c.hier[i], name, "cgroup.procs", path, sizeof path);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            for (size_t j = 0; j < *n; j++)
                close(fds[j]);
            *n = 0;
            return sbx_fail_errno(errbuf, errlen, e, "open %s", path);
        }
        fds[(*n)++] = fd;
    }
    return AT_OK;
}

int at_cgroup_join_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (write(fds[i], "0", 1) != 1)
            return -1;
    return 0;
}

/* Append the pids listed in one cgroup.procs to out (deduplicated). */
static int read_procs(const char *path, pid_t *out, size_t cap, size_t *n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int pid;
    while (fscanf(f, "%d", &pid) == 1) {
        size_t j = 0;
        while (j < *n && out[j] != pid)
            j++;
        if (j == *n && *n < cap)
            out[(*n)++] = pid;
    }
    fclose(f);
    return 0;
}

at_err_t at_cgroup_pids(const char *name, pid_t *out, size_t cap, size_t *n, char *errbuf,
                        size_t errlen)
{
    *n = 0;
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    char path[PATH_CAP];
    for (size_t i = 0; i < c.nhier; i++) {
        gpath(c.hier[i], name, "cgroup.procs", path, sizeof path);
        if (read_procs(path, out, cap, n) != 0 && errno != ENOENT)
            return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
    }
    return AT_OK;
}

at_err_t at_cgroup_usage(const char *name, at_cgroup_usage_t *out, char *errbuf, size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    memset(out, 0, sizeof *out);
    if (c.mode == AT_CGROUP_V2) {
        uint64_t usec = 0;
        if ((err = read_ctl(&c, C_MEMORY, name, "memory.current", NULL, &out->memory_bytes, errbuf,
                            errlen)) ||
            (err = read_ctl(&c, C_CPU, name, "cpu.stat", "usage_usec", &usec, errbuf, errlen)) ||
            (err = read_ctl(&c, C_PIDS, name, "pids.current", NULL, &out->pids, errbuf, errlen)) ||
            (err = read_ctl(&c, C_MEMORY, name, "memory.events", "oom_kill", &out->oom_kills,
                            errbuf, errlen)))
            return err;
        out->cpu_usage_ns = usec * 1000;
        return AT_OK;
    }
    if ((err = read_ctl(&c, C_MEMORY, name, "memory.usage_in_bytes", NULL, &out->memory_bytes,
                        errbuf, errlen)) ||
        (err = read_ctl(&c, C_CPUACCT, name, "cpuacct.usage", NULL, &out->cpu_usage_ns, errbuf,
                        errlen)) ||
        (err = read_ctl(&c, C_PIDS, name, "pids.current", NULL, &out->pids, errbuf, errlen)))
        return err;
    /* Kernels before 4.13 have no oom_kill line: report 0 there. */
    char path[PATH_CAP];
    gpath(c.ctl[C_MEMORY], name, "memory.oom_control", path, sizeof path);
    if (sbx_read_keyed_u64(path, "oom_kill", &out->oom_kills) != 0 && errno != ENOENT)
        return sbx_fail_errno(errbuf, errlen, errno, "read %s", path);
    return AT_OK;
}

/* ---- freeze / kill / destroy -------------------------------------------- */

/* Poll until the freezer reports the wanted state or the deadline passes. */
static int wait_frozen(const cg_ctx_t *c, const char *name, int frozen, int64_t deadline_us)
{
    char path[PATH_CAP], buf[256];
    const char *h = hier_of(c, C_FREEZER);
    gpath(h, name, c->mode == AT_CGROUP_V2 ? "cgroup.events" : "freezer.state", path, sizeof path);
    for (;;) {
        if (sbx_read_file(path, buf, sizeof buf) < 0)
            return -1;
        int done;
        if (c->mode == AT_CGROUP_V2)
            done = strstr(buf, frozen ? "frozen 1" : "frozen 0") != NULL;
        else
            done = strncmp(buf, frozen ? "FROZEN" : "THAWED", 6) == 0;
        if (done)
            return 0;
        if (at_mono_us() > deadline_us) {
            errno = ETIMEDOUT;
            return -1;
        }
        sbx_sleep_ms(1);
    }
}

static at_err_t set_frozen(const char *name, int frozen, int timeout_ms, char *errbuf,
                           size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    const char *file = c.mode == AT_CGROUP_V2 ? "cgroup.freeze" : "freezer.state";
    const char *val =
        c.mode == AT_CGROUP_V2 ? (frozen ? "1" : "0") : (frozen ? "FROZEN" : "THAWED");
    char path[PATH_CAP];
    gpath(hier_of(&c, C_FREEZER), name, file, path, sizeof path);
    if (sbx_write_file(path, val) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "write %s=%s", path, val);
    if (wait_frozen(&c, name, frozen, at_mono_us() + (int64_t)timeout_ms * 1000) != 0) {
        int e = errno;
        if (frozen) /* leave no half-frozen group behind */
            sbx_write_file(path, c.mode == AT_CGROUP_V2 ? "0" : "THAWED");
        return sbx_fail_errno(errbuf, errlen, e, "cgroup %s: waiting for %s", name,
                              frozen ? "frozen" : "thawed");
    }
    return AT_OK;
}

at_err_t at_cgroup_freeze(const char *name, int timeout_ms, char *errbuf, size_t errlen)
{
    return set_frozen(name, 1, timeout_ms, errbuf, errlen);
}

at_err_t at_cgroup_thaw(const char *name, int timeout_ms, char *errbuf, size_t errlen)
{
    return set_frozen(name, 0, timeout_ms, errbuf, errlen);
}

int at_cgroup_exists(const char *name)
{
    cg_ctx_t c;
    char ignore[8];
    if (begin(&c, name, ignore, sizeof ignore) != AT_OK)
        return 0;
    char path[PATH_CAP];
    for (size_t i = 0; i < c.nhier; i++) {
        gpath(c.hier[i], name, NULL, path, sizeof path);
        if (access(path, F_OK) == 0)
            return 1;
    }
    return 0;
}

#define KILL_BATCH 4096

/* One round of freeze, SIGKILL everything listed, thaw. Pids are read while
 * frozen: a frozen task cannot exit, so its pid cannot be recycled before the
 * kill lands. */
static size_t kill_round(const char *name, pid_t *pids)
{
    char ignore[256];
    int frozen = at_cgroup_freeze(name, 200, ignore, sizeof ignore) == AT_OK;
    size_t n = 0;
    at_cgroup_pids(name, pids, KILL_BATCH, &n, ignore, sizeof ignore);
    for (size_t i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    if (frozen)
        at_cgroup_thaw(name, 200, ignore, sizeof ignore);
    return n;
}

at_err_t at_cgroup_kill_all(const char *name, int timeout_ms, char *errbuf, size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    if (!at_cgroup_exists(name))
        return AT_OK;
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    int v2_kill = c.mode == AT_CGROUP_V2 && file_exists(&c, C_FREEZER, name, "cgroup.kill");
    pid_t *pids = malloc(KILL_BATCH * sizeof *pids);
    if (!pids)
        return sbx_fail(errbuf, errlen, AT_ENOMEM, "cgroup %s: kill buffer", name);
    size_t left = 0;
    for (int round = 0;; round++) {
        if (v2_kill) {
            /* cgroup.kill is atomic against forks; re-sent each round for stragglers */
            if (round % 50 == 0 &&
                (err = write_ctl(&c, C_FREEZER, name, "cgroup.kill", "1", errbuf, errlen)))
                break;
            at_cgroup_pids(name, pids, KILL_BATCH, &left, errbuf, errlen);
        } else {
            left = round % 10 == 0 ? kill_round(name, pids) : 0;
            if (left == 0)
                at_cgroup_pids(name, pids, KILL_BATCH, &left, errbuf, errlen);
        }
        if (left == 0) {
            err = AT_OK;
            break;
        }
        if (at_mono_us() > deadline) {
            err = sbx_fail(errbuf, errlen, AT_ETIMEOUT,
                           "cgroup %s: %zu processes still alive after %d ms (first pid %d)", name,
                           left, timeout_ms, (int)pids[0]);
            break;
        }
        sbx_sleep_ms(1);
    }
    free(pids);
    return err;
}

at_err_t at_cgroup_destroy(const char *name, int timeout_ms, char *errbuf, size_t errlen)
{
    cg_ctx_t c;
    at_err_t err = begin(&c, name, errbuf, errlen);
    if (err)
        return err;
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    char path[PATH_CAP];
    for (size_t i = 0; i < c.nhier; i++) {
        gpath(c.hier[i], name, NULL, path, sizeof path);
        /* EBUSY: tasks still leaving (exit in progress) or a child group */
        while (rmdir(path) != 0) {
            if (errno == ENOENT)
                break;
            if (errno != EBUSY || at_mono_us() > deadline)
                return sbx_fail_errno(errbuf, errlen, errno, "rmdir %s", path);
            sbx_sleep_ms(2);
        }
    }
    return AT_OK;
}

/* ---- listing ------------------------------------------------------------- */

void at_cgroup_list_free(char **names, size_t n)
{
    sbx_names_free(names, n);
}

/* Add the subdirectories of dir to the list (names that pass validation only). */
static at_err_t list_dir(const char *dir, char ***names, size_t *n, size_t *cap, char *errbuf,
                         size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return AT_OK;
        return sbx_fail_errno(errbuf, errlen, errno, "opendir %s", dir);
    }
    at_err_t err = AT_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_type != DT_DIR || !at_cgroup_name_ok(de->d_name) ||
            sbx_names_has(*names, *n, de->d_name))
            continue;
        if (*n >= MAX_LIST) {
            err = sbx_fail(errbuf, errlen, AT_ETOOBIG, "cgroup: more than %d groups in %s",
                           MAX_LIST, dir);
            break;
        }
        if (sbx_names_add(names, n, cap, de->d_name) != 0) {
            err = sbx_fail(errbuf, errlen, AT_ENOMEM, "cgroup: list entry");
            break;
        }
    }
    closedir(d);
    return err;
}

at_err_t at_cgroup_list(char ***names, size_t *n, char *errbuf, size_t errlen)
{
    *names = NULL;
    *n = 0;
    cg_ctx_t c;
    ctx_get(&c);
    if (c.mode == AT_CGROUP_NONE)
        return sbx_fail(errbuf, errlen, AT_ECONFIG, "cgroup: no usable hierarchy");
    size_t cap = 0;
    char dir[PATH_CAP];
    for (size_t i = 0; i < c.nhier; i++) {
        snprintf(dir, sizeof dir, "%s/%s", c.hier[i], AT_CGROUP_PARENT);
        at_err_t err = list_dir(dir, names, n, &cap, errbuf, errlen);
        if (err) {
            at_cgroup_list_free(*names, *n);
            *names = NULL;
            *n = 0;
            return err;
        }
    }
    return AT_OK;
}
