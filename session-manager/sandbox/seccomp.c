/*
 * Hand-built seccomp BPF for the sandbox (policy in seccomp.h). The program is
 * a straight line: arch check, then one "if nr == X return EPERM" pair per
 * denied syscall, then small argument blocks (ioctl, clone, personality) that
 * end in returns, then allow. Short forward jumps only, so no jump offset can
 * overflow the 8-bit jt/jf fields.
 */
#include "seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sbx_util.h"

#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#define SBX_X32_BIT 0x40000000u /* __X32_SYSCALL_BIT */
#elif defined(__aarch64__) && defined(__AARCH64EL__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#if defined(SBX_AUDIT_ARCH) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SBX_SUPPORTED 1
#endif

#ifdef SBX_SUPPORTED

/* Low 32 bits of syscall argument i (little endian). */
#define ARG_LO(i) ((uint32_t)(offsetof(struct seccomp_data, args) + 8 * (i)))

#define RET_ERRNO(e) (SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

/* Syscalls denied outright. Entries missing on an architecture are skipped. */
static const int denied[] = {
#ifdef __NR_mount
    __NR_mount,
#endif
#ifdef __NR_umount2
    __NR_umount2,
#endif
#ifdef __NR_pivot_root
    __NR_pivot_root,
#endif
#ifdef __NR_ptrace
    __NR_ptrace,
#endif
#ifdef __NR_process_vm_readv
    __NR_process_vm_readv,
#endif
#ifdef __NR_process_vm_writev
    __NR_process_vm_writev,
#endif
#ifdef __NR_kexec_load
    __NR_kexec_load,
#endif
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
#ifdef __NR_bpf
    __NR_bpf,
#endif
#ifdef __NR_keyctl
    __NR_keyctl,
#endif
#ifdef __NR_add_key
    __NR_add_key,
#endif
#ifdef __NR_request_key
    __NR_request_key,
#endif
#ifdef __NR_init_module
    __NR_init_module,
#endif
#ifdef __NR_finit_module
    __NR_finit_module,
#endif
#ifdef __NR_delete_module
    __NR_delete_module,
#endif
#ifdef __NR_perf_event_open
    __NR_perf_event_open,
#endif
#ifdef __NR_userfaultfd
    __NR_userfaultfd,
#endif
#ifdef __NR_open_by_handle_at
    __NR_open_by_handle_at,
#endif
#ifdef __NR_name_to_handle_at
    __NR_name_to_handle_at,
#endif
#ifdef __NR_swapon
    __NR_swapon,
#endif
#ifdef __NR_swapoff
    __NR_swapoff,
#endif
#ifdef __NR_reboot
    __NR_reboot,
#endif
#ifdef __NR_settimeofday
    __NR_settimeofday,
#endif
#ifdef __NR_clock_settime
    __NR_clock_settime,
#endif
#ifdef __NR_clock_adjtime
    __NR_clock_adjtime,
#endif
#ifdef __NR_adjtimex
    __NR_adjtimex,
#endif
#ifdef __NR_syslog
    __NR_syslog,
#endif
#ifdef __NR_acct
    __NR_acct,
#endif
#ifdef __NR_quotactl
    __NR_quotactl,
#endif
#ifdef __NR_lookup_dcookie
    __NR_lookup_dcookie,
#endif
#ifdef __NR_iopl
    __NR_iopl,
#endif
#ifdef __NR_ioperm
    __NR_ioperm,
#endif
#ifdef __NR_unshare
    __NR_unshare,
#endif
#ifdef __NR_setns
    __NR_setns,
#endif
#ifdef __NR_fsopen
    __NR_fsopen,
#endif
#ifdef __NR_fsmount
    __NR_fsmount,
#endif
#ifdef __NR_fsconfig
    __NR_fsconfig,
#endif
#ifdef __NR_fspick
    __NR_fspick,
#endif
#ifdef __NR_move_mount
    __NR_move_mount,
#endif
#ifdef __NR_open_tree
    __NR_open_tree,
#endif
#ifdef __NR_mount_setattr
    __NR_mount_setattr,
#endif
};

/* Namespace-creating clone flags; all in the low 32 bits of arg 0. */
#define NS_FLAGS                                                                                   \
    (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |     \
     CLONE_NEWCGROUP)

typedef struct {
    struct sock_filter *ins;
    size_t n;
    int overflow;
} prog_t;

static void emit(prog_t *p, struct sock_filter f)
{
    if (p->n >= AT_SECCOMP_MAX_INSNS) {
        p->overflow = 1;
        return;
    }
    p->ins[p->n++] = f;
}

#define STMT(code, k) emit(p, (struct sock_filter)BPF_STMT((code), (k)))
#define JUMP(code, k, jt, jf) emit(p, (struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))

/* A is the syscall number on entry and on every path that falls through. */
static void emit_ioctl_block(prog_t *p)
{
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5);
    STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 2, 0);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 1, 0);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
}

static void emit_clone_block(prog_t *p)
{
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4);
    STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1);
    STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
#ifdef __NR_clone3
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1);
    STMT(BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
#endif
}

/* personality(0) and the query personality(0xffffffff) are what libc and
 * Python use; any other persona (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...)
 * weakens the process and is refused. */
static void emit_personality_block(prog_t *p)
{
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 0, 5);
    STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 1, 0);
    STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
}

static void emit_program(prog_t *p)
{
    /* Wrong architecture (e.g. int 0x80 from a 64-bit process): kill, since
     * syscall numbers mean something else there and the list would not apply. */
    STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)offsetof(struct seccomp_data, arch));
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)offsetof(struct seccomp_data, nr));
#ifdef SBX_X32_BIT
    JUMP(BPF_JMP | BPF_JGE | BPF_K, SBX_X32_BIT, 0, 1);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
#endif
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)denied[i], 0, 1);
        STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
    }
    emit_ioctl_block(p);
    emit_clone_block(p);
    emit_personality_block(p);
    STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
}
#endif /* SBX_SUPPORTED */

at_err_t at_seccomp_build(struct sock_fprog *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof *out);
#ifndef SBX_SUPPORTED
    return sbx_fail(errbuf, errlen, AT_ECONFIG,
                    "seccomp: no filter for this architecture (x86_64 and little-endian "
                    "aarch64 only); refusing to start sandboxes without one");
#else
    prog_t p = {.ins = calloc(AT_SECCOMP_MAX_INSNS, sizeof(struct sock_filter))};
    if (!p.ins)
        return sbx_fail(errbuf, errlen, AT_ENOMEM, "seccomp: program buffer");
    emit_program(&p);
    if (p.overflow) {
        free(p.ins);
        return sbx_fail(errbuf, errlen, AT_ETOOBIG, "seccomp: program over %d instructions",
                        AT_SECCOMP_MAX_INSNS);
    }
    out->filter = p.ins;
    out->len = (unsigned short)p.n;
    return AT_OK;
#endif
}

void at_seccomp_free(struct sock_fprog *prog)
{
    if (!prog)
        return;
    free(prog->filter);
    prog->filter = NULL;
    prog->len = 0;
}

at_err_t at_seccomp_write_fd(int *fd, char *errbuf, size_t errlen)
{
    *fd = -1;
    struct sock_fprog prog;
    at_err_t err = at_seccomp_build(&prog, errbuf, errlen);
    if (err)
        return err;
    size_t len = prog.len * sizeof(struct sock_filter);
    int mfd = memfd_create("atelier-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0) {
        at_seccomp_free(&prog);
        return sbx_fail_errno(errbuf, errlen, errno, "seccomp: memfd_create");
    }
    ssize_t n = write(mfd, prog.filter, len);
    int e = errno;
    at_seccomp_free(&prog);
    if (n < 0 || (size_t)n != len) {
        close(mfd);
        return sbx_fail_errno(errbuf, errlen, n < 0 ? e : EIO, "seccomp: write memfd");
    }
    /* Sealed: nothing that inherits the fd can alter the policy. */
    if (fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0 ||
        lseek(mfd, 0, SEEK_SET) != 0) {
        e = errno;
        close(mfd);
        return sbx_fail_errno(errbuf, errlen, e, "seccomp: seal memfd");
    }
    *fd = mfd;
    return AT_OK;
}

at_err_t at_seccomp_install(char *errbuf, size_t errlen)
{
    struct sock_fprog prog;
    at_err_t err = at_seccomp_build(&prog, errbuf, errlen);
    if (err)
        return err;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    } else if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        err = sbx_fail_errno(errbuf, errlen, errno, "prctl(PR_SET_SECCOMP)");
    }
    at_seccomp_free(&prog);
    return err;
}
