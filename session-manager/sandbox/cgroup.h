/*
 * Per-session cgroups: CPU, memory (swap off) and pids limits, usage, freeze
 * and kill for one sandbox.
 *
 * A session's group is "atelier/<name>" under every hierarchy it needs:
 *   - cgroup v2 (cgroup2 mounted at /sys/fs/cgroup): one directory
 *     /sys/fs/cgroup/atelier/<name>; cpu, memory and pids are enabled in the
 *     subtree_control of the root and of atelier/.
 *   - cgroup v1 (or hybrid, as on Debian 12 with systemd's legacy layout): one
 *     directory per controller hierarchy: cpu, cpuacct (usage), memory, pids
 *     and freezer; co-mounted controllers (cpu,cpuacct) share a directory.
 * The mode is detected once per process (statfs of /sys/fs/cgroup plus
 * /proc/self/mountinfo) and is reported by at_cgroup_mode().
 *
 * Every function is blocking, touches only the files of the group it is given
 * and keeps no state but the detected mount points, so any thread (the
 * session-manager's worker pool) may call any of them at any time. Names are
 * 1..64 characters of [A-Za-z0-9_.-], not "." or "..".
 *
 * Errors: at_err_t plus a message naming the file and the value in errbuf
 * ("write /sys/fs/cgroup/memory/atelier/s1/memory.limit_in_bytes=1048576:
 * Device or resource busy"). Nothing is logged on failure; callers log.
 */
#ifndef ATELIER_SANDBOX_CGROUP_H
#define ATELIER_SANDBOX_CGROUP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atelier/err.h"

#define AT_CGROUP_NAME_MAX 64
#define AT_CGROUP_PARENT "atelier" /* the directory every session group lives in */
#define AT_CGROUP_MAX_FDS 8        /* upper bound of hierarchies one group spans */

typedef enum {
    AT_CGROUP_NONE = 0, /* no usable cgroup hierarchy: every call fails with AT_ECONFIG */
    AT_CGROUP_V1,
    AT_CGROUP_V2,
} at_cgroup_mode_t;

/* 0 in any field means "no limit". */
typedef struct {
    uint32_t cpu_millis; /* 1000 = one CPU (CFS quota over a 100 ms period) */
    uint64_t memory_mb;  /* hard limit; swap is always off for the group */
    uint32_t pids_max;   /* processes + threads, fork-bomb guard */
} at_cgroup_limits_t;

typedef struct {
    uint64_t memory_bytes; /* v1 memory.usage_in_bytes, v2 memory.current (page cache included) */
    uint64_t cpu_usage_ns; /* total CPU time since creation */
    uint64_t pids;         /* pids.current */
    uint64_t oom_kills;    /* processes the kernel OOM-killed for this group's limit */
} at_cgroup_usage_t;

/* Detected mode (detection runs once, on first use of any function). */
at_cgroup_mode_t at_cgroup_mode(void);

/* Make the group (idempotent: an existing group is kept and its limits set). */
at_err_t at_cgroup_create(const char *name, const at_cgroup_limits_t *limits, char *errbuf,
                          size_t errlen);

/* Change limits on a live group (scale up/down). A memory limit below what the
 * group uses now fails with AT_EBUSY after the kernel's bounded reclaim, and
 * leaves the previous memory limit in place: it never OOM-kills or hangs (v2:
 * memory.high is tried first and only then memory.max). */
at_err_t at_cgroup_set_limits(const char *name, const at_cgroup_limits_t *limits, char *errbuf,
                              size_t errlen);

/* Read the limits back from the kernel's files (for status and tests). */
at_err_t at_cgroup_get_limits(const char *name, at_cgroup_limits_t *out, char *errbuf,
                              size_t errlen);

/* Move pid (0 = the caller) into the group in every hierarchy. */
at_err_t at_cgroup_attach(const char *name, pid_t pid, char *errbuf, size_t errlen);

/* Open the group's cgroup.procs files for writing (O_CLOEXEC), so a freshly
 * forked child can join with at_cgroup_join_fds before it execs: that puts
 * every later process of the sandbox in the group from its first instruction.
 * The caller closes the fds. */
at_err_t at_cgroup_open_procs(const char *name, int fds[AT_CGROUP_MAX_FDS], size_t *n, char *errbuf,
                              size_t errlen);
/* Write "0" (= the calling process) to each fd. Async-signal-safe: meant for
 * the child between fork and exec. Returns 0 or -1 with errno. */
int at_cgroup_join_fds(const int *fds, size_t n);

/* Current usage. */
at_err_t at_cgroup_usage(const char *name, at_cgroup_usage_t *out, char *errbuf, size_t errlen);

/* Pids in the group (union over hierarchies, deduplicated, at most cap; *n is
 * the number stored). */
at_err_t at_cgroup_pids(const char *name, pid_t *out, size_t cap, size_t *n, char *errbuf,
                        size_t errlen);

/* Freeze every process of the group and wait (up to timeout_ms) until the
 * kernel says it is frozen; thaw undoes it. */
at_err_t at_cgroup_freeze(const char *name, int timeout_ms, char *errbuf, size_t errlen);
at_err_t at_cgroup_thaw(const char *name, int timeout_ms, char *errbuf, size_t errlen);

/* Kill every process in the group and wait until it is empty: v2 with
 * cgroup.kill writes it; otherwise freeze (so nothing forks away), SIGKILL every
 * pid, thaw, repeat until no pid is left. AT_ETIMEOUT past timeout_ms. An
 * absent group is AT_OK. */
at_err_t at_cgroup_kill_all(const char *name, int timeout_ms, char *errbuf, size_t errlen);

/* Remove the group from every hierarchy, retrying while the kernel says busy
 * (processes exiting), up to timeout_ms. An absent group is AT_OK. The group
 * must be empty: call at_cgroup_kill_all first. */
at_err_t at_cgroup_destroy(const char *name, int timeout_ms, char *errbuf, size_t errlen);

/* 1 if atelier/<name> exists in any hierarchy, else 0. */
int at_cgroup_exists(const char *name);

/* Names of every atelier/<name> group in any hierarchy (orphan cleanup). On
 * success *names is a malloc'd array of *n malloc'd strings: the caller frees
 * it with at_cgroup_list_free. */
at_err_t at_cgroup_list(char ***names, size_t *n, char *errbuf, size_t errlen);
void at_cgroup_list_free(char **names, size_t n);

/* 1 if name is a valid group name. */
int at_cgroup_name_ok(const char *name);

/*
 * Testing only: pin v2 mode and its root instead of detecting them (mode
 * AT_CGROUP_NONE: detect again; V1 cannot be forced). With require_controllers = 0 a v2 root
 * without cpu/memory/pids is accepted and limits are skipped, which lets the
 * v2 code path (attach, freeze, kill, destroy) run on the controller-less
 * /sys/fs/cgroup/unified of a hybrid host. Not for production use.
 */
at_err_t at_cgroup_force_mode(at_cgroup_mode_t mode, const char *v2_root, int require_controllers,
                              char *errbuf, size_t errlen);

#endif
