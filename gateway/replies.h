/*
 * Jobs this gateway instance waits on. Workers PUBLISH replies to
 * reply:{instance}; a waiter gets the reply or, after its timeout, a NULL one.
 * A lost reply is recoverable from the jobs row (GET /api/jobs/{id}).
 */
#ifndef GATEWAY_REPLIES_H
#define GATEWAY_REPLIES_H

#include <jansson.h>
#include <stdint.h>

#include "atelier/err.h"
#include "atelier/job.h"
#include "gateway.h"

/* reply is the worker's message {id, ok, result?, error?, instance, attempt}
 * (borrowed), or NULL on timeout / send failure with err saying why. */
typedef void reply_cb(json_t *reply, at_err_t err, void *arg);

replies_t *replies_new(gateway_t *gw);
/* Shutdown in two steps: cancel (every waiter answered, no resubscribe)
 * while the Redis clients live, free after they are gone. */
void replies_cancel(replies_t *r);
void replies_free(replies_t *r);
/* Push job to the role's stream and wait up to timeout_ms for its reply.
 * job->reply_to is set here. On AT_OK the callback runs exactly once. */
at_err_t replies_send(replies_t *r, const char *role, at_job_t *job, int64_t timeout_ms,
                      reply_cb *cb, void *arg);
int replies_waiting(const replies_t *r);

#endif
