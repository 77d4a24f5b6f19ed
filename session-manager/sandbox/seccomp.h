/*
 * The sandbox's seccomp filter: a classic-BPF program, built by hand (no
 * libseccomp), that bubblewrap installs on the sandbox's PID 1 with
 * `--seccomp FD` (no_new_privs is set by bwrap; the filter is inherited by
 * every process of the sandbox).
 *
 * Policy (x86_64 and aarch64; other architectures: at_seccomp_build refuses):
 *   - a foreign audit arch (i386 through int 0x80, or any other) and the x32 ABI
 *     (syscall numbers with __X32_SYSCALL_BIT): the process is killed;
 *   - EPERM for what a workspace never needs: mount and the new mount API
 *     (fsopen, fsmount, fsconfig, fspick, move_mount, open_tree,
 *     mount_setattr), umount2, pivot_root, unshare, setns, ptrace,
 *     process_vm_readv/writev, kexec_load, kexec_file_load, bpf, keyctl,
 *     add_key, request_key, init_module, finit_module, delete_module,
 *     perf_event_open, userfaultfd, open_by_handle_at, name_to_handle_at,
 *     swapon, swapoff, reboot, settimeofday, clock_settime, clock_adjtime,
 *     adjtimex, syslog, acct, quotactl, lookup_dcookie, iopl, ioperm;
 *   - personality: only 0 (PER_LINUX) and 0xffffffff (the query form) pass;
 *   - ioctl: TIOCSTI and TIOCLINUX (request compared on its low 32 bits, as
 *     the kernel does) get EPERM, so nothing can type into a terminal it
 *     inherited (CVE-2017-5226);
 *   - clone with any namespace flag (NEWUSER, NEWNS, NEWPID, NEWNET, NEWIPC,
 *     NEWUTS, NEWCGROUP) gets EPERM; clone3 gets ENOSYS, since its flags live
 *     in memory a filter cannot read, and glibc then falls back to clone;
 *   - everything else is allowed.
 */
#ifndef ATELIER_SANDBOX_SECCOMP_H
#define ATELIER_SANDBOX_SECCOMP_H

#include <stddef.h>

#include <linux/filter.h>

#include "atelier/err.h"

#define AT_SECCOMP_MAX_INSNS 256

/* Build the program into out: out->filter is malloc'd, the caller frees it with
 * at_seccomp_free. AT_ECONFIG on an unsupported architecture. */
at_err_t at_seccomp_build(struct sock_fprog *out, char *errbuf, size_t errlen);
void at_seccomp_free(struct sock_fprog *prog);

/* A sealed memfd (O_CLOEXEC, offset 0) holding the program, for `bwrap
 * --seccomp FD`. bwrap reads the fd to its end, so every launch needs a fresh
 * one. On success *fd is the caller's to close. */
at_err_t at_seccomp_write_fd(int *fd, char *errbuf, size_t errlen);

/* Install the program on the calling thread (sets no_new_privs first). For
 * tests and for processes started without bwrap. */
at_err_t at_seccomp_install(char *errbuf, size_t errlen);

#endif
