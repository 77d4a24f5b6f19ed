/*
 * Internal helpers shared by the sandbox modules (cgroup.c, volume.c, bwrap.c):
 * error formatting into a caller's errbuf, small sysfs-style file reads and
 * writes, a /proc/self/mountinfo scanner and a fork/exec runner for helper
 * binaries (mkfs.ext4). Not part of the public API.
 */
#ifndef ATELIER_SBX_UTIL_H
#define ATELIER_SBX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atelier/err.h"

/* Format "what: detail" into errbuf (may be NULL) and return code. */
at_err_t sbx_fail(char *errbuf, size_t errlen, at_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same, with ": strerror(errnum)" appended. */
at_err_t sbx_fail_errno(char *errbuf, size_t errlen, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Read up to cap-1 bytes of a small file (sysfs, procfs) into buf, NUL-terminated.
 * Returns bytes read or -1 with errno set. */
ssize_t sbx_read_file(const char *path, char *buf, size_t cap);
/* Write s to an existing file in one write(2) (cgroup files want exactly that).
 * Returns 0 or -1 with errno set. */
int sbx_write_file(const char *path, const char *s);
/* Read a file holding one unsigned integer ("max" reads as UINT64_MAX). */
int sbx_read_u64(const char *path, uint64_t *out);
/* Find "key N" on its own line in a flat-keyed file (memory.events, cpu.stat). */
int sbx_read_keyed_u64(const char *path, const char *key, uint64_t *out);

/* One line of /proc/self/mountinfo, unescaped. */
typedef struct {
    char mount_point[4096];
    char fstype[64];
    char source[4096];
    char super_opts[1024];
} sbx_mount_t;

/* Call cb for every mount; cb returns nonzero to stop. Returns 0 or -1 with errno. */
int sbx_mountinfo_scan(int (*cb)(const sbx_mount_t *m, void *arg), void *arg);

/* True if the comma-separated list has the exact item. */
int sbx_opt_has(const char *list, const char *item);

/* A growable list of owned name strings (the at_*_list results): true if s
 * is in it; append a copy of s (doubling the array from 16); free it all.
 * sbx_names_add returns 0 or -1 with errno ENOMEM and the list unchanged. */
int sbx_names_has(char *const *names, size_t n, const char *s);
int sbx_names_add(char ***names, size_t *n, size_t *cap, const char *s);
void sbx_names_free(char **names, size_t n);

/* Run an absolute program (no shell, no PATH search) with a clean environment,
 * stdin/stdout on /dev/null and stderr captured (bounded) into errbuf on
 * failure. Kills it after timeout_ms. Uses waitpid on its own child, so the
 * caller must not have SIGCHLD set to SIG_IGN. */
at_err_t sbx_run(const char *const argv[], int timeout_ms, char *errbuf, size_t errlen);

/* Sleep for ms milliseconds / us microseconds (EINTR-safe). */
void sbx_sleep_ms(int ms);
void sbx_sleep_us(long us);

#endif
