/* atelier-sync-worker: consumes q:sync. Files between PostgreSQL and the
 * workspace volumes (sync.h lists the parts): `load` brings a volume up to
 * date, `push` applies one saved path, and the watcher takes what the
 * sandboxes write back into the rows. The common kinds (ping, selftest)
 * come with the worker runtime. */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "load.h"
#include "push.h"
#include "sync.h"
#include "watch.h"
#include "watchset.h"

#define POOL_THREADS 4
#define POOL_QUEUE_MAX 4096

sync_ctx_t sync_g;

static const at_handler_t handlers[] = {
    {"load", handle_load, 1},
    {"push", handle_push, 1},
};

int sync_volume_dir(const char *volume, char *out, size_t cap)
{
    if (!sync_g.base[0] || !*volume || strchr(volume, '/') || !strcmp(volume, ".") ||
        !strcmp(volume, ".."))
        return -1;
    int n = snprintf(out, cap, "%s/%s", sync_g.base, volume);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int sync_open_volume(const char *dir)
{
    struct stat b, v;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* a mount point: another file system than the base it sits in */
    if (stat(sync_g.base, &b) != 0 || fstat(fd, &v) != 0 || v.st_dev == b.st_dev) {
        close(fd);
        errno = ENOENT;
        return -1;
    }
    return fd;
}

static int sync_init(at_worker_t *w)
{
    const at_config_t *cfg = at_worker_config(w);
    sync_g.w = w;
    sync_g.pool = at_pool_new(at_worker_io(w), POOL_THREADS, POOL_QUEUE_MAX);
    if (!sync_g.pool || watch_init() != 0) {
        at_error("event=start_failed error=\"cannot start the file pool or inotify\"");
        return -1;
    }
    mkdir(cfg->workspace_base_path, 0755); /* the session-manager makes it too */
    if (!realpath(cfg->workspace_base_path, sync_g.base)) {
        /* pushes find no volume and the watcher has nothing to watch; loads
         * still run (their job names the volume) */
        at_warn("event=no_workspace_base path=%s error=\"%s\" effect=\"push and watch off\"",
                cfg->workspace_base_path, strerror(errno));
        sync_g.base[0] = '\0';
        return 0;
    }
    if (watchset_start() != 0) {
        at_error("event=start_failed error=\"cannot start the watcher\"");
        return -1;
    }
    return 0;
}

static void sync_shutdown(at_worker_t *w)
{
    (void)w;
    watchset_stop();
    at_pool_free(sync_g.pool); /* waits for file work in flight; its done runs */
    sync_g.pool = NULL;
    watch_shutdown();
}

int main(int argc, char **argv)
{
    /* paths are UTF-8 everywhere; libarchive converts through the locale */
    setlocale(LC_CTYPE, "C.UTF-8");
    static const at_worker_def_t def = {
        .role = "sync",
        .proc = "sync-worker",
        .handlers = handlers,
        .nhandlers = sizeof handlers / sizeof handlers[0],
        .init = sync_init,
        .shutdown = sync_shutdown,
    };
    return at_worker_main(&def, argc, argv);
}
