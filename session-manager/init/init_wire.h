/* The framing atelier-init and its clients (initctl) share.
 *
 * The socket is AF_UNIX SOCK_SEQPACKET, so the kernel keeps message boundaries: one
 * message is one JSON object of at most AT_INITWIRE_MAX_MSG bytes, with up to
 * AT_INITWIRE_MAX_FDS descriptors attached as SCM_RIGHTS. No length prefix, no partial
 * reads. An empty message is never sent (it would read as end of stream). */
#ifndef ATELIER_INIT_WIRE_H
#define ATELIER_INIT_WIRE_H

#include <stddef.h>
#include <sys/types.h>

#define AT_INITWIRE_MAX_MSG 65536
#define AT_INITWIRE_MAX_FDS 3
/* Protocol version, sent in the "hello" event on every accepted connection. */
#define AT_INITWIRE_VERSION 1

/* Sends one message of len bytes (1..AT_INITWIRE_MAX_MSG) with nfds descriptors
 * (0..AT_INITWIRE_MAX_FDS; the caller keeps its own copies). flags are sendmsg flags;
 * MSG_NOSIGNAL is always added. Returns 0, or -1 with errno (EAGAIN under MSG_DONTWAIT
 * when the peer's queue is full, EMSGSIZE, EINVAL). */
int at_initwire_send(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);

/* Receives one message into buf (cap bytes). Descriptors attached to it are stored in
 * fds (up to maxfds, each O_CLOEXEC) and counted in *nfds; any beyond maxfds, or all
 * of them when fds is NULL, are closed. Returns the message length, 0 at end of stream,
 * or -1 with errno: EMSGSIZE for a message longer than cap (dropped, its descriptors
 * closed), EAGAIN under MSG_DONTWAIT when nothing is queued. */
ssize_t at_initwire_recv(int sock, void *buf, size_t cap, int *fds, int maxfds, int *nfds,
                         int flags);

#endif
