#!/bin/sh
# Start atelier-session-manager in a container (installed in the image as
# /usr/local/bin/atelier-session-manager-start; docker-compose.yml uses it).
#
# Docker masks parts of /proc (/proc/kcore, /proc/keys, ...) and mounts
# others read-only (/proc/sys, /proc/bus, ...). While those overmounts exist
# the kernel refuses a fresh proc mount inside a new user namespace, which is
# what every bubblewrap sandbox makes (`bwrap --unshare-all --proc /proc`:
# "Can't mount proc on /newroot/proc: Operation not permitted"). The docker
# CLI's `--security-opt systempaths=unconfined` removes them, but the Engine
# API that docker-compose speaks has no such option, so with CAP_SYS_ADMIN
# (docker-compose.yml grants it) we unmount them here, in the container's own
# mount namespace; the host is not touched. ATELIER_UNMASK_PROC=0 skips it.
set -eu

if [ "${ATELIER_UNMASK_PROC:-1}" != 0 ]; then
    # Deepest first; ignore what cannot be unmounted (no CAP_SYS_ADMIN): the
    # manager then reports the sandbox failure itself.
    for m in $(awk '$5 ~ "^/proc/" {print $5}' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null \
            || echo "atelier-session-manager-start: cannot unmount $m" >&2
    done
fi
exec atelier-session-manager "$@"
