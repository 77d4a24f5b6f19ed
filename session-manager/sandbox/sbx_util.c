#include "sbx_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "atelier/util.h"

at_err_t sbx_fail(char *errbuf, size_t errlen, at_err_t code, const char *fmt, ...)
{
    if (errbuf && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

at_err_t sbx_fail_errno(char *errbuf, size_t errlen, int errnum, const char *fmt, ...)
{
    if (errbuf && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < errlen)
            snprintf(errbuf + n, errlen - (size_t)n, ": %s", strerror(errnum));
    }
    switch (errnum) {
    case ENOENT:
        return AT_ENOTFOUND;
    case EBUSY:
        return AT_EBUSY;
    case ENOMEM:
        return AT_ENOMEM;
    case EINVAL:
        return AT_EINVAL;
    case ETIMEDOUT:
        return AT_ETIMEOUT;
    default:
        return AT_EIO;
    }
}

ssize_t sbx_read_file(const char *path, char *buf, size_t cap)
{
    if (cap == 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < cap - 1) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    return (ssize_t)got;
}

int sbx_write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    size_t len = strlen(s);
    ssize_t n;
    do {
        n = write(fd, s, len);
    } while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    if ((size_t)n != len) {
        errno = EIO;
        return -1;
    }
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncmp(s, "max", 3) == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    if (*s < '0' || *s > '9') {
        errno = EINVAL;
        return -1;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int sbx_read_u64(const char *path, uint64_t *out)
{
    char buf[64];
    if (sbx_read_file(path, buf, sizeof buf) < 0)
        return -1;
    return parse_u64(buf, out);
}

int sbx_read_keyed_u64(const char *path, const char *key, uint64_t *out)
{
    char buf[8192];
    if (sbx_read_file(path, buf, sizeof buf) < 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return parse_u64(line + klen + 1, out);
        line = next;
    }
    errno = ENOENT;
    return -1;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    while (*in && o + 1 < cap) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '7' && in[2] >= '0' && in[2] <= '7' &&
            in[3] >= '0' && in[3] <= '7') {
            out[o++] = (char)(((in[1] - '0') << 6) | ((in[2] - '0') << 3) | (in[3] - '0'));
            in += 4;
        } else {
            out[o++] = *in++;
        }
    }
    out[o] = '\0';
}

/* Split one mountinfo line: "id parent maj:min root mountpoint opts [optional...] - fstype
 * source superopts". Returns 0 if it had every field. */
static int parse_mountinfo_line(char *line, sbx_mount_t *m)
{
    char *save = NULL;
    char *field[6] = {0};
    char *tok = strtok_r(line, " \n", &save);
    int i = 0;
    for (; tok && i < 6; i++, tok = strtok_r(NULL, " \n", &save))
        field[i] = tok;
    if (i < 6)
        return -1;
    /* skip optional fields up to the "-" separator */
    while (tok && strcmp(tok, "-") != 0)
        tok = strtok_r(NULL, " \n", &save);
    if (!tok)
        return -1;
    char *fstype = strtok_r(NULL, " \n", &save);
    char *source = strtok_r(NULL, " \n", &save);
    char *super = strtok_r(NULL, " \n", &save);
    if (!fstype || !source)
        return -1;
    unescape(field[4], m->mount_point, sizeof m->mount_point);
    unescape(fstype, m->fstype, sizeof m->fstype);
    unescape(source, m->source, sizeof m->source);
    unescape(super ? super : "", m->super_opts, sizeof m->super_opts);
    return 0;
}

int sbx_mountinfo_scan(int (*cb)(const sbx_mount_t *m, void *arg), void *arg)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    sbx_mount_t *m = malloc(sizeof *m);
    if (!m) {
        fclose(f);
        errno = ENOMEM;
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        if (parse_mountinfo_line(line, m) != 0)
            continue;
        if (cb(m, arg))
            break;
    }
    free(line);
    free(m);
    fclose(f);
    return 0;
}

int sbx_opt_has(const char *list, const char *item)
{
    size_t len = strlen(item);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && strncmp(p, item, len) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

int sbx_names_has(char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return 1;
    return 0;
}

int sbx_names_add(char ***names, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char **grown = realloc(*names, ncap * sizeof *grown);
        if (!grown)
            return -1;
        *names = grown;
        *cap = ncap;
    }
    char *copy = strdup(s);
    if (!copy)
        return -1;
    (*names)[(*n)++] = copy;
    return 0;
}

void sbx_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void sbx_sleep_us(long us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sbx_sleep_ms(int ms)
{
    sbx_sleep_us((long)ms * 1000);
}

/* Wait for pid until deadline_us (monotonic); SIGKILL it past the deadline.
 * Returns the wait status, or -1 if it could not be reaped. */
static int wait_deadline(pid_t pid, int64_t deadline_us, int *timed_out)
{
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (at_mono_us() > deadline_us) {
            *timed_out = 1;
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return status;
        }
        sbx_sleep_ms(1);
    }
}

at_err_t sbx_run(const char *const argv[], int timeout_ms, char *errbuf, size_t errlen)
{
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return sbx_fail_errno(errbuf, errlen, errno, "pipe for %s", argv[0]);

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    /* A caller's blocked or ignored signals must not leak into the helper. */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return sbx_fail_errno(errbuf, errlen, rc, "spawn %s", argv[0]);
    }

    /* Collect stderr (bounded) until EOF or the deadline. */
    char out[512];
    size_t used = 0;
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left_ms = (deadline - at_mono_us()) / 1000;
        if (left_ms <= 0)
            break;
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int pr = poll(&p, 1, (int)left_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        char tmp[256];
        ssize_t n = read(pfd[0], tmp, sizeof tmp);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n;
        if (take > sizeof out - 1 - used)
            take = sizeof out - 1 - used;
        memcpy(out + used, tmp, take);
        used += take;
    }
    close(pfd[0]);
    out[used] = '\0';
    while (used > 0 && (out[used - 1] == '\n' || out[used - 1] == ' '))
        out[--used] = '\0';

    int timed_out = 0;
    int status = wait_deadline(pid, deadline, &timed_out);
    if (timed_out)
        return sbx_fail(errbuf, errlen, AT_ETIMEOUT, "%s: killed after %d ms", argv[0], timeout_ms);
    if (status < 0)
        return sbx_fail_errno(errbuf, errlen, errno, "waitpid %s", argv[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return AT_OK;
    if (WIFSIGNALED(status))
        return sbx_fail(errbuf, errlen, AT_EIO, "%s: killed by signal %d: %s", argv[0],
                        WTERMSIG(status), out);
    return sbx_fail(errbuf, errlen, AT_EIO, "%s: exit status %d: %s", argv[0], WEXITSTATUS(status),
                    out);
}
