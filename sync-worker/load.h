/* The sync-worker's `load` job (load.c). */
#ifndef SYNC_LOAD_H
#define SYNC_LOAD_H

#include "atelier/worker.h"

#define AT_STR_(x) #x
#define AT_STR(x) AT_STR_(x)

void handle_load(at_job_ctx_t *ctx);

#endif
