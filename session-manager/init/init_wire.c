/* SOCK_SEQPACKET framing with SCM_RIGHTS, shared by atelier-init and initctl. */
#include "init_wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Room for more descriptors than a message may carry, so a sender that attaches too many
 * still has them all received (and closed) rather than silently dropped by the kernel. */
#define WIRE_RECV_FDS_ROOM 16

int at_initwire_send(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags)
{
    if (len == 0 || nfds < 0 || nfds > AT_INITWIRE_MAX_FDS || (nfds > 0 && !fds)) {
        errno = EINVAL;
        return -1;
    }
    if (len > AT_INITWIRE_MAX_MSG) {
        errno = EMSGSIZE;
        return -1;
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * AT_INITWIRE_MAX_FDS)];
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
        if (n >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Moves the descriptors of every SCM_RIGHTS header into fds (up to maxfds) and closes
 * the rest. */
static void take_fds(struct msghdr *msg, int *fds, int maxfds, int *nfds)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (fds && *nfds < maxfds)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
}

ssize_t at_initwire_recv(int sock, void *buf, size_t cap, int *fds, int maxfds, int *nfds,
                         int flags)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * WIRE_RECV_FDS_ROOM)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl};
    *nfds = 0;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    take_fds(&msg, fds, maxfds, nfds);
    if (msg.msg_flags & MSG_TRUNC) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}
