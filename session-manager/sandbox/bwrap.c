/*
 * The sandbox launcher: bwrap's argv, the run dir's files, and a fork/exec
 * that puts bwrap in the session's cgroup before it runs (bwrap.h).
 */
#include "bwrap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "cgroup.h"
#include "etcdir.h"
#include "sbx_util.h"
#include "seccomp.h"

#define SECCOMP_FD_INSIDE 3 /* fd numbers bwrap sees */
#define INFO_FD_INSIDE 4
#define FIRST_FREE_FD 5
#define HIGH_FD 64 /* where the child parks fds before renumbering them */
#define DEFAULT_HOSTNAME "workspace"
#define DEFAULT_TERM "xterm-256color"
#define SANDBOX_PATH "/usr/local/bin:/usr/bin:/bin"

/* Host /etc entries a shell, git, Python (numpy's BLAS goes through
 * /etc/alternatives) and TLS clients read, bound read-only when present. Never
 * the host's passwd, group, shadow, hosts, ld.so.preload, or machine-specific
 * config (gitconfig, pip.conf, profile.d). */
static const char *const etc_ro[] = {
    "/etc/ld.so.cache",  "/etc/ld.so.conf",   "/etc/ld.so.conf.d",    "/etc/nsswitch.conf",
    "/etc/alternatives", "/etc/ssl",          "/etc/ca-certificates", "/etc/localtime",
    "/etc/timezone",     "/etc/mime.types",   "/etc/protocols",       "/etc/services",
    "/etc/shells",       "/etc/bash.bashrc",  "/etc/profile",         "/etc/inputrc",
    "/etc/terminfo",     "/etc/os-release",   "/etc/debian_version",  "/etc/magic",
    "/etc/magic.mime",   "/etc/matplotlibrc",
};
/* Only when the sandbox has the host's network. */
static const char *const etc_net[] = {"/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf"};
/* Files written into the run dir and bound over /etc. */
static const char *const run_files[] = {"passwd", "group", "hosts"};

/* ---- argv ------------------------------------------------------------------ */

static void add(at_bwrap_argv_t *a, const char *s)
{
    if (a->argc < AT_BWRAP_MAX_ARGS)
        a->argv[a->argc] = s;
    a->argc++; /* counted past the end so an overflow is detected once, at the end */
}

/* Copy a formatted string into the argv's own buffer; NULL when full. */
static const char *keep(at_bwrap_argv_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const char *keep(at_bwrap_argv_t *a, const char *fmt, ...)
{
    size_t room = sizeof a->buf - a->used;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(a->buf + a->used, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        a->used = sizeof a->buf; /* mark full */
        return NULL;
    }
    const char *s = a->buf + a->used;
    a->used += (size_t)n + 1;
    return s;
}

static void add3(at_bwrap_argv_t *a, const char *opt, const char *x, const char *y)
{
    add(a, opt);
    add(a, x);
    add(a, y);
}

static void add_env(at_bwrap_argv_t *a, const char *name, const char *value)
{
    add3(a, "--setenv", name, value);
}

/* /etc/python3, /etc/python3.11, ...: whatever this host's Python has. */
static void add_python_etc(at_bwrap_argv_t *a)
{
    DIR *d = opendir("/etc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "python3", 7) != 0 || strchr(de->d_name, '/'))
            continue;
        const char *p = keep(a, "/etc/%s", de->d_name);
        if (p)
            add3(a, "--ro-bind-try", p, p);
    }
    closedir(d);
}

/* ---- who the sandbox's user is: passwd, group, hosts ------------------------ */

static at_err_t write_atomic(int dirfd, const char *dir, const char *name, const char *content,
                             char *errbuf, size_t errlen);

typedef struct {
    char passwd[512], group[256], hosts[512];
    const char *content[3]; /* in run_files' order */
} identity_t;

static void identity_files(identity_t *id, unsigned uid, unsigned gid, const char *host)
{
    snprintf(id->passwd, sizeof id->passwd,
             "root:x:0:0:root:/root:/usr/sbin/nologin\n"
             "%s:x:%u:%u:workspace user:%s:/bin/bash\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
             AT_SANDBOX_USER, uid, gid, AT_SANDBOX_WORKDIR);
    snprintf(id->group, sizeof id->group, "root:x:0:\n%s:x:%u:\nnogroup:x:65534:\n",
             AT_SANDBOX_USER, gid);
    snprintf(id->hosts, sizeof id->hosts,
             "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
             host);
    id->content[0] = id->passwd;
    id->content[1] = id->group;
    id->content[2] = id->hosts;
}

/* The default identity (uid/gid 1000, the default hostname) is in the
 * prepared /etc already: no bind needed for it. */
static int default_identity(const at_sandbox_spec_t *spec)
{
    return (!spec->uid || spec->uid == AT_SANDBOX_UID) &&
           (!spec->gid || spec->gid == AT_SANDBOX_UID) && !spec->hostname;
}

/* ---- the prepared /etc ---------------------------------------------------- */

#define ETC_MAX_BYTES (64u << 20)
#define ETC_MAX_ENTRIES 50000

static at_err_t copy_etc_entry(const char *src, const char *tmp, sbx_copy_budget_t *b, char *errbuf,
                               size_t errlen)
{
    char dst[PATH_MAX];
    if (snprintf(dst, sizeof dst, "%s/%s", tmp, strrchr(src, '/') + 1) >= (int)sizeof dst)
        return sbx_fail(errbuf, errlen, AT_ETOOBIG, "etc copy: path too long");
    return sbx_copy_tree(src, dst, b, errbuf, errlen);
}

/* passwd, group and hosts of the default identity; a sandbox with another
 * gets its run dir's files bound over them (bwrap cannot make a mount point
 * inside a read-only bind, so they must exist). */
static at_err_t add_identity(const char *tmp, char *errbuf, size_t errlen)
{
    identity_t id = {0};
    identity_files(&id, AT_SANDBOX_UID, AT_SANDBOX_UID, DEFAULT_HOSTNAME);
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "etc copy: open %s", tmp);
    at_err_t err = AT_OK;
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0] && !err; i++)
        err = write_atomic(dfd, tmp, run_files[i], id.content[i], errbuf, errlen);
    close(dfd);
    return err;
}

at_err_t at_bwrap_prepare_etc(const char *base, at_sandbox_net_t net, char *out, size_t outcap,
                              char *errbuf, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s/.etc-new-%d", base, (int)getpid()) >= (int)sizeof tmp)
        return sbx_fail(errbuf, errlen, AT_ETOOBIG, "etc copy: base path too long");
    sbx_remove_tree(tmp);
    if (mkdir(tmp, 0700) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "etc copy: mkdir %s", tmp);
    sbx_copy_budget_t b = {.max_bytes = ETC_MAX_BYTES,
                           .max_entries = ETC_MAX_ENTRIES,
                           .hash = 14695981039346656037ull};
    at_err_t err = AT_OK;
    for (size_t i = 0; err == AT_OK && i < sizeof etc_ro / sizeof etc_ro[0]; i++)
        err = copy_etc_entry(etc_ro[i], tmp, &b, errbuf, errlen);
    for (size_t i = 0;
         err == AT_OK && net == AT_SANDBOX_NET_HOST && i < sizeof etc_net / sizeof etc_net[0]; i++)
        err = copy_etc_entry(etc_net[i], tmp, &b, errbuf, errlen);
    DIR *d = err == AT_OK ? opendir("/etc") : NULL;
    struct dirent *de;
    while (d && err == AT_OK && (de = readdir(d))) {
        char src[PATH_MAX];
        if (!strncmp(de->d_name, "python3", 7) &&
            snprintf(src, sizeof src, "/etc/%s", de->d_name) < (int)sizeof src)
            err = copy_etc_entry(src, tmp, &b, errbuf, errlen);
    }
    if (d)
        closedir(d);
    if (err == AT_OK)
        err = add_identity(tmp, errbuf, errlen);
    if (err == AT_OK && chmod(tmp, 0755) != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "etc copy: chmod %s", tmp);
    /* Named by its content: an unchanged host /etc finds its copy in place
     * (sandboxes still bound to it keep it); a changed one gets a new copy
     * next to the old, which running sandboxes may still use. */
    if (err == AT_OK &&
        snprintf(out, outcap, "%s/.etc-%016llx", base, (unsigned long long)b.hash) >= (int)outcap)
        err = sbx_fail(errbuf, errlen, AT_ETOOBIG, "etc copy: out buffer too small");
    struct stat st;
    if (err == AT_OK && lstat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        sbx_remove_tree(tmp);
        return AT_OK;
    }
    if (err == AT_OK && rename(tmp, out) != 0)
        err = sbx_fail_errno(errbuf, errlen, errno, "etc copy: rename to %s", out);
    if (err != AT_OK)
        sbx_remove_tree(tmp);
    return err;
}

static void add_namespaces(at_bwrap_argv_t *a, const at_sandbox_spec_t *spec)
{
    add(a, "--unshare-user");
    add(a, "--unshare-pid");
    add(a, "--unshare-ipc");
    add(a, "--unshare-uts");
    add(a, "--unshare-cgroup-try");
    if (spec->net != AT_SANDBOX_NET_HOST)
        add(a, "--unshare-net");
    add(a, "--disable-userns"); /* belt and braces next to the seccomp clone rule */
    add(a, "--uid");
    add(a, keep(a, "%u", (unsigned)(spec->uid ? spec->uid : AT_SANDBOX_UID)));
    add(a, "--gid");
    add(a, keep(a, "%u", (unsigned)(spec->gid ? spec->gid : AT_SANDBOX_UID)));
    add(a, "--hostname");
    add(a, spec->hostname ? spec->hostname : DEFAULT_HOSTNAME);
    add(a, "--as-pid-1");
    add(a, "--new-session");
    add(a, "--cap-drop");
    add(a, "ALL");
}

static void add_filesystem(at_bwrap_argv_t *a, const at_sandbox_spec_t *spec)
{
    add3(a, "--ro-bind", "/usr", "/usr");
    add3(a, "--symlink", "usr/bin", "/bin");
    add3(a, "--symlink", "usr/sbin", "/sbin");
    add3(a, "--symlink", "usr/lib", "/lib");
    if (access("/usr/lib64", F_OK) == 0)
        add3(a, "--symlink", "usr/lib64", "/lib64");
    add(a, "--proc");
    add(a, "/proc");
    add(a, "--dev");
    add(a, "/dev");
    add(a, "--tmpfs");
    add(a, "/tmp");
    add3(a, "--symlink", "../tmp", "/var/tmp");
    if (spec->etc_dir) /* one bind (at_bwrap_prepare_etc) */
        add3(a, "--ro-bind", spec->etc_dir, "/etc");
    for (size_t i = 0;
         (!spec->etc_dir || !default_identity(spec)) && i < sizeof run_files / sizeof run_files[0];
         i++)
        add3(a, "--ro-bind", keep(a, "%s/%s", spec->run_dir, run_files[i]),
             keep(a, "/etc/%s", run_files[i]));
    if (!spec->etc_dir) {
        for (size_t i = 0; i < sizeof etc_ro / sizeof etc_ro[0]; i++)
            add3(a, "--ro-bind-try", etc_ro[i], etc_ro[i]);
        add_python_etc(a);
        if (spec->net == AT_SANDBOX_NET_HOST)
            for (size_t i = 0; i < sizeof etc_net / sizeof etc_net[0]; i++)
                add3(a, "--ro-bind-try", etc_net[i], etc_net[i]);
    }
    add3(a, "--bind", spec->run_dir, AT_SANDBOX_RUN_INSIDE);
    if (spec->init_path)
        add3(a, "--ro-bind", spec->init_path, AT_SANDBOX_INIT_INSIDE);
    add3(a, "--bind", spec->volume_dir, AT_SANDBOX_WORKDIR);
    add3(a, "--symlink", AT_SANDBOX_WORKDIR, "/app"); /* a link: no second bind */
    for (size_t i = 0; i < spec->n_ro_binds; i++)
        add3(a, "--ro-bind", spec->ro_binds[i].src,
             spec->ro_binds[i].dst ? spec->ro_binds[i].dst : spec->ro_binds[i].src);
    add(a, "--chdir");
    add(a, AT_SANDBOX_WORKDIR);
}

static void add_environment(at_bwrap_argv_t *a, const at_sandbox_spec_t *spec)
{
    add(a, "--clearenv");
    add_env(a, "PATH", SANDBOX_PATH);
    add_env(a, "HOME", AT_SANDBOX_WORKDIR);
    add_env(a, "LANG", "C.UTF-8");
    add_env(a, "TERM", spec->term ? spec->term : DEFAULT_TERM);
    add_env(a, "USER", AT_SANDBOX_USER);
    add_env(a, "LOGNAME", AT_SANDBOX_USER);
    add_env(a, "SHELL", "/bin/bash");
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        const char *eq = strchr(spec->env[i], '=');
        if (!eq || eq == spec->env[i])
            continue; /* rejected by validate_spec */
        add_env(a, keep(a, "%.*s", (int)(eq - spec->env[i]), spec->env[i]), eq + 1);
    }
}

static at_err_t validate_spec(const at_sandbox_spec_t *spec, char *errbuf, size_t errlen)
{
    if (!spec || !at_cgroup_name_ok(spec->session))
        return sbx_fail(errbuf, errlen, AT_EINVAL, "sandbox: invalid session name");
    const char *paths[] = {spec->volume_dir, spec->run_dir};
    for (size_t i = 0; i < 2; i++)
        if (!paths[i] || paths[i][0] != '/')
            return sbx_fail(errbuf, errlen, AT_EINVAL,
                            "sandbox %s: volume_dir and run_dir must be absolute paths",
                            spec->session);
    if (spec->init_path && spec->init_path[0] != '/')
        return sbx_fail(errbuf, errlen, AT_EINVAL, "sandbox %s: init_path must be absolute",
                        spec->session);
    if (!spec->argv && !spec->init_path)
        return sbx_fail(errbuf, errlen, AT_EINVAL, "sandbox %s: no command and no init_path",
                        spec->session);
    if (spec->argv && (!spec->argv[0] || !spec->argv[0][0]))
        return sbx_fail(errbuf, errlen, AT_EINVAL, "sandbox %s: empty command", spec->session);
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        const char *eq = strchr(spec->env[i], '=');
        if (!eq || eq == spec->env[i])
            return sbx_fail(errbuf, errlen, AT_EINVAL,
                            "sandbox %s: env entry '%s' is not NAME=VALUE", spec->session,
                            spec->env[i]);
    }
    for (size_t i = 0; i < spec->n_ro_binds; i++)
        if (!spec->ro_binds[i].src || spec->ro_binds[i].src[0] != '/')
            return sbx_fail(errbuf, errlen, AT_EINVAL, "sandbox %s: bind source must be absolute",
                            spec->session);
    return AT_OK;
}

at_err_t at_bwrap_build_argv(const at_sandbox_spec_t *spec, int seccomp_fd, int info_fd,
                             at_bwrap_argv_t *out, char *errbuf, size_t errlen)
{
    at_err_t err = validate_spec(spec, errbuf, errlen);
    if (err)
        return err;
    out->argc = 0;
    out->used = 0;
    add(out, spec->bwrap_path ? spec->bwrap_path : AT_BWRAP_PATH);
    add_namespaces(out, spec);
    if (seccomp_fd >= 0) {
        add(out, "--seccomp");
        add(out, keep(out, "%d", seccomp_fd));
    }
    if (info_fd >= 0) {
        add(out, "--info-fd");
        add(out, keep(out, "%d", info_fd));
    }
    add_filesystem(out, spec);
    add_environment(out, spec);
    /* last: the root tmpfs (mount points, /etc) becomes read-only */
    add(out, "--remount-ro");
    add(out, "/");
    add(out, "--");
    if (spec->argv) {
        for (size_t i = 0; spec->argv[i]; i++)
            add(out, spec->argv[i]);
    } else {
        add(out, AT_SANDBOX_INIT_INSIDE);
        add3(out, "--socket", AT_SANDBOX_SOCKET_INSIDE, "--workdir");
        add(out, AT_SANDBOX_WORKDIR);
    }
    int overflow = out->argc > AT_BWRAP_MAX_ARGS || out->used >= sizeof out->buf;
    for (size_t i = 0; !overflow && i < out->argc; i++)
        overflow = out->argv[i] == NULL; /* a keep() that did not fit */
    if (overflow)
        return sbx_fail(errbuf, errlen, AT_ETOOBIG,
                        "sandbox %s: bwrap command line over %d arguments or %d bytes",
                        spec->session, AT_BWRAP_MAX_ARGS, AT_BWRAP_ARGBUF);
    out->argv[out->argc] = NULL;
    return AT_OK;
}

/* ---- run dir ---------------------------------------------------------------- */

/* Replace dirfd/name with content: written under a temporary name with O_EXCL
 * and renamed over, so a symlink or hard link a sandbox left there is replaced,
 * never written through. */
static at_err_t write_atomic(int dirfd, const char *dir, const char *name, const char *content,
                             char *errbuf, size_t errlen)
{
    char tmp[96];
    unsigned rnd;
    at_random_bytes(&rnd, sizeof rnd);
    snprintf(tmp, sizeof tmp, ".%s.tmp-%08x", name, rnd);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "sandbox: create %s/%s", dir, tmp);
    size_t len = strlen(content);
    ssize_t n = write(fd, content, len);
    int e = n < 0 ? errno : EIO;
    close(fd);
    if (n < 0 || (size_t)n != len) {
        unlinkat(dirfd, tmp, 0);
        return sbx_fail_errno(errbuf, errlen, e, "sandbox: write %s/%s", dir, tmp);
    }
    if (renameat(dirfd, tmp, dirfd, name) != 0) {
        e = errno;
        unlinkat(dirfd, tmp, 0);
        return sbx_fail_errno(errbuf, errlen, e, "sandbox: rename %s/%s", dir, name);
    }
    return AT_OK;
}

at_err_t at_bwrap_prepare_run_dir(const at_sandbox_spec_t *spec, char *errbuf, size_t errlen)
{
    at_err_t err = validate_spec(spec, errbuf, errlen);
    if (err)
        return err;
    identity_t id = {0};
    identity_files(&id, (unsigned)(spec->uid ? spec->uid : AT_SANDBOX_UID),
                   (unsigned)(spec->gid ? spec->gid : AT_SANDBOX_UID),
                   spec->hostname ? spec->hostname : DEFAULT_HOSTNAME);
    int dfd = open(spec->run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "sandbox: open run dir %s", spec->run_dir);
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0] && !err; i++)
        err = write_atomic(dfd, spec->run_dir, run_files[i], id.content[i], errbuf, errlen);
    /* The init inside makes init.sock here, as the sandbox's host uid. */
    if (!err && (fchown(dfd, spec->host_uid, spec->host_gid) != 0 || fchmod(dfd, 0700) != 0))
        err = sbx_fail_errno(errbuf, errlen, errno, "sandbox: chown run dir %s to %d:%d",
                             spec->run_dir, (int)spec->host_uid, (int)spec->host_gid);
    close(dfd);
    return err;
}

/* Keep the previous log as sandbox.log.1 and start a fresh one. O_EXCL: never
 * opens through a link the sandbox (which owns the run dir) put there. */
static int open_log(const char *run_dir, char *errbuf, size_t errlen, at_err_t *err)
{
    int dfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        *err = sbx_fail_errno(errbuf, errlen, errno, "sandbox: open run dir %s", run_dir);
        return -1;
    }
    renameat(dfd, AT_SANDBOX_LOG, dfd, AT_SANDBOX_LOG ".1");
    unlinkat(dfd, AT_SANDBOX_LOG, 0); /* in case the rename failed */
    int fd = openat(dfd, AT_SANDBOX_LOG,
                    O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
    int e = errno;
    close(dfd);
    if (fd < 0)
        *err = sbx_fail_errno(errbuf, errlen, e, "sandbox: create %s/%s", run_dir, AT_SANDBOX_LOG);
    return fd;
}

/* Last line(s) of the log, for an error message when bwrap failed. */
static void log_tail(const char *run_dir, char *out, size_t cap)
{
    out[0] = '\0';
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", run_dir, AT_SANDBOX_LOG);
    /* O_NONBLOCK: a FIFO left there by a sandbox must not hang us */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)(cap - 1) ? size - (off_t)(cap - 1) : 0;
    ssize_t n = pread(fd, out, cap - 1, from);
    close(fd);
    if (n < 0)
        n = 0;
    out[n] = '\0';
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\n')
            out[i] = ' ';
}

/* ---- launch ------------------------------------------------------------------ */

typedef struct {
    int seccomp_fd, info_r, info_w, log_fd, null_fd;
    int cg_fds[AT_CGROUP_MAX_FDS];
    size_t n_cg;
} launch_fds_t;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void close_launch_fds(launch_fds_t *f)
{
    close_fd(&f->seccomp_fd);
    close_fd(&f->info_r);
    close_fd(&f->info_w);
    close_fd(&f->log_fd);
    close_fd(&f->null_fd);
    for (size_t i = 0; i < f->n_cg; i++)
        close_fd(&f->cg_fds[i]);
    f->n_cg = 0;
}

static at_err_t open_launch_fds(const at_sandbox_spec_t *spec, launch_fds_t *f, char *errbuf,
                                size_t errlen)
{
    at_err_t err;
    int p[2];
    if ((err = at_seccomp_write_fd(&f->seccomp_fd, errbuf, errlen)))
        return err;
    if (pipe2(p, O_CLOEXEC) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "sandbox: pipe");
    f->info_r = p[0];
    f->info_w = p[1];
    if ((f->log_fd = open_log(spec->run_dir, errbuf, errlen, &err)) < 0)
        return err;
    if ((f->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "sandbox: open /dev/null");
    return at_cgroup_open_procs(spec->session, f->cg_fds, &f->n_cg, errbuf, errlen);
}

/* Report a failure from the forked child into the log (no stdio, no malloc). */
static void child_fail(int log_fd, const char *what)
{
    char msg[160];
    size_t n = 0;
    const char *parts[] = {"atelier: sandbox launch: ", what, " failed\n"};
    for (size_t i = 0; i < 3; i++)
        for (const char *s = parts[i]; *s && n < sizeof msg; s++)
            msg[n++] = *s;
    if (write(log_fd, msg, n) < 0) {
        /* nothing left to report to */
    }
    _exit(127);
}

/* Between fork and exec: async-signal-safe calls only. */
static void child_exec(const at_sandbox_spec_t *spec, const launch_fds_t *f,
                       const at_bwrap_argv_t *a, char *const envp[])
{
    if (at_cgroup_join_fds(f->cg_fds, f->n_cg) != 0)
        child_fail(f->log_fd, "joining the cgroup");
    if (setsid() < 0)
        child_fail(f->log_fd, "setsid");
    /* The manager's blocked and ignored signals must not reach the sandbox. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* SIGKILL/SIGSTOP/reserved ones fail harmlessly */
    /* Park the fds high, then number them 0..4 (dup2 also clears O_CLOEXEC). */
    int src[5] = {f->null_fd, f->log_fd, f->log_fd, f->seccomp_fd, f->info_w};
    int high[5];
    for (int i = 0; i < 5; i++)
        if ((high[i] = fcntl(src[i], F_DUPFD, HIGH_FD)) < 0)
            child_fail(f->log_fd, "dup");
    for (int i = 0; i < 5; i++)
        if (dup2(high[i], i) != i)
            child_fail(high[1], "dup2");
    if (syscall(SYS_close_range, FIRST_FREE_FD, ~0U, 0) != 0) {
        struct rlimit rl;
        int max =
            getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
        for (int fd = FIRST_FREE_FD; fd < max; fd++)
            close(fd);
    }
    if (spec->host_uid != 0) {
        /* raw syscalls: glibc's wrappers would try to signal the parent's other threads */
        if (syscall(SYS_setgroups, 0, NULL) != 0 ||
            syscall(SYS_setresgid, spec->host_gid, spec->host_gid, spec->host_gid) != 0 ||
            syscall(SYS_setresuid, spec->host_uid, spec->host_uid, spec->host_uid) != 0)
            child_fail(2, "dropping to the sandbox host uid");
    }
    execve(a->argv[0], (char *const *)a->argv, envp);
    child_fail(2, "exec bwrap");
}

/* Read bwrap's --info-fd JSON until its closing brace, EOF or the deadline,
 * and pick "child-pid" out of it. */
static pid_t read_child_pid(int fd, int timeout_ms)
{
    char buf[1024];
    size_t used = 0;
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    while (used < sizeof buf - 1) {
        int left = (int)((deadline - at_mono_us()) / 1000);
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used] = '\0';
        if (strchr(buf, '}'))
            break;
    }
    buf[used] = '\0';
    const char *k = strstr(buf, "\"child-pid\"");
    if (!k || !(k = strchr(k, ':')))
        return -1;
    long pid = strtol(k + 1, NULL, 10);
    return pid > 0 && pid < (1L << 22) ? (pid_t)pid : -1;
}

/* bwrap reports the child pid right after clone, before it sets up the
 * mounts; a bad bind fails only then. So wait until the child has exec'd the
 * command (its /proc exe is no longer bwrap), or bwrap has exited (peeked with
 * WNOWAIT, so the caller can still reap it). Returns 0 once the command runs
 * or ran and bwrap exited 0, -1 if bwrap exited otherwise, -2 on timeout. */
static int wait_exec(pid_t init_pid, pid_t bwrap_pid, const char *bwrap_real, int timeout_ms)
{
    char link[64], exe[4096];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)init_pid);
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        ssize_t n = readlink(link, exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\0';
            if (strcmp(exe, bwrap_real) != 0)
                return 0;
        }
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)bwrap_pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == bwrap_pid)
            return si.si_code == CLD_EXITED && si.si_status == 0 ? 0 : -1;
        if (at_mono_us() > deadline)
            return -2;
        sbx_sleep_us(200); /* setup takes a few ms: poll finely, it is bounded */
    }
}

/* bwrap failed (or hung): empty the session's group, so nothing of this
 * sandbox is left running, reap bwrap and say why from its log. */
static at_err_t launch_failed(const at_sandbox_spec_t *spec, pid_t pid, int timed_out, char *errbuf,
                              size_t errlen)
{
    char ignore[256];
    at_cgroup_kill_all(spec->session, 2000, ignore, sizeof ignore);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    char tail[400];
    log_tail(spec->run_dir, tail, sizeof tail);
    if (timed_out)
        return sbx_fail(errbuf, errlen, AT_ETIMEOUT,
                        "sandbox %s: bwrap did not start the command within %d ms: %s",
                        spec->session, AT_BWRAP_INFO_TIMEOUT_MS, tail[0] ? tail : "no output");
    return sbx_fail(errbuf, errlen, AT_EIO, "sandbox %s: bwrap did not start (status %d): %s",
                    spec->session, status, tail[0] ? tail : "no output");
}

at_err_t at_bwrap_launch(const at_sandbox_spec_t *spec, at_sandbox_proc_t *out, char *errbuf,
                         size_t errlen)
{
    out->bwrap_pid = out->init_pid = -1;
    out->pidfd = -1;
    int64_t t0 = at_mono_us();
    at_err_t err = at_bwrap_prepare_run_dir(spec, errbuf, errlen);
    if (err)
        return err;
    at_bwrap_argv_t *a = malloc(sizeof *a);
    if (!a)
        return sbx_fail(errbuf, errlen, AT_ENOMEM, "sandbox: argv");
    launch_fds_t f = {.seccomp_fd = -1, .info_r = -1, .info_w = -1, .log_fd = -1, .null_fd = -1};
    if ((err = open_launch_fds(spec, &f, errbuf, errlen)) ||
        (err = at_bwrap_build_argv(spec, SECCOMP_FD_INSIDE, INFO_FD_INSIDE, a, errbuf, errlen))) {
        close_launch_fds(&f);
        free(a);
        return err;
    }
    static char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    char bwrap_real[4096];
    if (!realpath(a->argv[0], bwrap_real)) {
        err = sbx_fail_errno(errbuf, errlen, errno, "sandbox: %s", a->argv[0]);
        close_launch_fds(&f);
        free(a);
        return err;
    }
    if (spec->host_uid == 0)
        at_warn("msg=sandbox_as_root session=%s hint=\"set a sandbox host uid: uid %d inside "
                "maps to host root\"",
                spec->session, (int)(spec->uid ? spec->uid : AT_SANDBOX_UID));
    pid_t pid = fork();
    if (pid == 0)
        child_exec(spec, &f, a, envp); /* does not return */
    int fork_errno = errno;
    free(a);
    close_fd(&f.info_w);
    int info_r = f.info_r;
    f.info_r = -1;
    close_launch_fds(&f);
    if (pid < 0) {
        close(info_r);
        return sbx_fail_errno(errbuf, errlen, fork_errno, "sandbox %s: fork", spec->session);
    }
    /* Race-free: pid is our unreaped child. */
    out->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    out->bwrap_pid = pid;
    int64_t deadline = at_mono_us() + (int64_t)AT_BWRAP_INFO_TIMEOUT_MS * 1000;
    out->init_pid = read_child_pid(info_r, AT_BWRAP_INFO_TIMEOUT_MS);
    close(info_r);
    int started = -1;
    if (out->init_pid > 0) {
        int left_ms = (int)((deadline - at_mono_us()) / 1000);
        started = wait_exec(out->init_pid, pid, bwrap_real, left_ms > 0 ? left_ms : 1);
    }
    if (started != 0) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int gone =
            waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
        err = launch_failed(spec, pid, !gone, errbuf, errlen);
        if (out->pidfd >= 0)
            close(out->pidfd);
        out->pidfd = -1;
        out->bwrap_pid = -1;
        return err;
    }
    at_info("msg=sandbox_started session=%s bwrap_pid=%d init_pid=%d ms=%.1f", spec->session,
            (int)pid, (int)out->init_pid, (double)(at_mono_us() - t0) / 1000.0);
    return AT_OK;
}
