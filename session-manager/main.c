/* atelier-session-manager: consumes q:session. Start-up wires the `local`
 * runtime driver and a pool for its blocking calls to the lifecycle
 * handlers (lifecycle.h) and the terminals (terminals.h); the common kinds
 * (ping, selftest) come with the worker runtime. */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/pool.h"
#include "atelier/util.h"
#include "atelier/worker.h"
#include "lifecycle.h"
#include "local_driver.h"
#include "monitor.h"
#include "terminals.h"

#define DRIVER_THREADS 4
#define DRIVER_QUEUE_MAX 4096

static at_pool_t *g_pool;     /* loop thread only */
static sm_driver_t *g_driver; /* loop thread only */

/* The sandbox's files belong to SM_SANDBOX_UID on the host, and bwrap binds
 * the volume as that user: every folder above WORKSPACE_BASE_PATH must let
 * it through, else every start fails with bwrap's "Permission denied". */
static int base_reachable(const char *base)
{
    char path[PATH_MAX];
    if (at_strlcpy(path, base, sizeof path))
        return 0;
    for (;;) {
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            return 0;
        int ok = st.st_uid == SM_SANDBOX_UID   ? (st.st_mode & S_IXUSR) != 0
                 : st.st_gid == SM_SANDBOX_UID ? (st.st_mode & S_IXGRP) != 0
                                               : (st.st_mode & S_IXOTH) != 0;
        if (!ok) {
            at_error("event=start_failed error=\"%s is not searchable by uid %d (the sandbox "
                     "user): WORKSPACE_BASE_PATH %s is unreachable\"",
                     path, SM_SANDBOX_UID, base);
            return 0;
        }
        char *slash = strrchr(path, '/');
        if (!slash || slash == path)
            return 1;
        *slash = '\0';
    }
}

/* atelier-init is built next to this binary: <dir of exe>/init/atelier-init. */
static int init_path(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    return snprintf(out, cap, "%s/init/atelier-init", dirname(exe)) < (int)cap ? 0 : -1;
}

static int sm_init(at_worker_t *w)
{
    const at_config_t *cfg = at_worker_config(w);
    char init[PATH_MAX], run_base[PATH_MAX], err[SM_ERR_MAX];
    if (init_path(init, sizeof init) != 0 || access(init, X_OK) != 0) {
        at_error("event=start_failed error=\"atelier-init not found or not executable at %s\"",
                 init);
        return -1;
    }
    if (access(AT_BWRAP_PATH, X_OK) != 0) {
        at_error("event=start_failed error=\"bubblewrap not found at %s (apt install "
                 "bubblewrap)\"",
                 AT_BWRAP_PATH);
        return -1;
    }
    if (!base_reachable(cfg->workspace_base_path))
        return -1;
    if (snprintf(run_base, sizeof run_base, "%s/run/sandboxes", cfg->data_dir) >=
        (int)sizeof run_base) {
        at_error("event=start_failed error=\"ATELIER_DATA_DIR too long\"");
        return -1;
    }
    sm_local_config_t lc = {.workspace_base = cfg->workspace_base_path,
                            .run_base = run_base,
                            .init_path = init,
                            .host_uid = SM_SANDBOX_UID,
                            .host_gid = SM_SANDBOX_UID,
                            .net = strcmp(cfg->sandbox_network, "host") == 0 ? AT_SANDBOX_NET_HOST
                                                                             : AT_SANDBOX_NET_NONE,
                            .default_disk_bytes = (uint64_t)cfg->disk_quota_mb << 20,
                            .spares = 1};
    g_driver = sm_local_driver_new(&lc, err);
    if (!g_driver) {
        at_error("event=start_failed error=\"local driver: %s\"", err);
        return -1;
    }
    g_pool = at_pool_new(at_worker_io(w), DRIVER_THREADS, DRIVER_QUEUE_MAX);
    if (!g_pool || sm_life_init(w, g_driver, g_pool) != 0 ||
        sm_term_init(w, g_driver, g_pool) != 0 || sm_monitor_start(w, g_driver, g_pool) != 0) {
        at_error("event=start_failed error=\"cannot make the driver pool\"");
        sm_term_close();
        at_pool_free(g_pool);
        sm_term_free();
        sm_local_driver_free(g_driver);
        g_pool = NULL;
        g_driver = NULL;
        return -1;
    }
    at_info("event=driver_ready driver=local workspace_base=%s run_base=%s init=%s network=%s",
            cfg->workspace_base_path, run_base, init, cfg->sandbox_network);
    return 0;
}

static void sm_shutdown(at_worker_t *w)
{
    (void)w;
    sm_monitor_stop();
    sm_life_close();
    sm_term_close();
    at_pool_free(g_pool); /* waits for running driver calls; their jobs finish */
    g_pool = NULL;
    sm_term_free();                 /* shells keep running, for the next instance */
    sm_local_driver_free(g_driver); /* sandboxes keep running */
    g_driver = NULL;
    sm_life_free();
}

int main(int argc, char **argv)
{
    at_worker_def_t def = {
        .role = "session",
        .proc = "session-manager",
        .handlers = sm_life_handlers,
        .nhandlers = sm_life_handlers_count,
        .init = sm_init,
        .shutdown = sm_shutdown,
    };
    return at_worker_main(&def, argc, argv);
}
