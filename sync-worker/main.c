/* atelier-sync-worker: consumes q:sync. Files between PostgreSQL and the
 * workspace volumes: `load` (load.c) brings a volume up to date. The common
 * kinds (ping, selftest) come with the worker runtime. */
#include <locale.h>

#include "atelier/worker.h"
#include "load.h"

static const at_handler_t handlers[] = {
    {"load", handle_load, 1},
};

int main(int argc, char **argv)
{
    /* paths are UTF-8 everywhere; libarchive converts through the locale */
    setlocale(LC_CTYPE, "C.UTF-8");
    static const at_worker_def_t def = {
        .role = "sync",
        .proc = "sync-worker",
        .handlers = handlers,
        .nhandlers = sizeof handlers / sizeof handlers[0],
    };
    return at_worker_main(&def, argc, argv);
}
