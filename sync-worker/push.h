/* The `push` job (push.c): a path saved, deleted or moved through the API,
 * applied to the running volume. */
#ifndef SYNC_PUSH_H
#define SYNC_PUSH_H

#include "atelier/worker.h"

void handle_push(at_job_ctx_t *ctx);
/* The same for a write the worker itself decides (a conflict copy, a row
 * kept over a delete in the sandbox): no job, the outcome is logged. */
void push_local(const char *ws, const char *path);

#endif
