/* Session operations shared by both API families (routes_sessions.c):
 * each writes its records, jobs row and audit row in one statement and
 * hands the result to a family's render function. */
#ifndef GATEWAY_SESSIONS_H
#define GATEWAY_SESSIONS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "http.h"

/* Builds the success answer of an operation from its result (rows valid
 * during the call); ctx is the pointer the handler passed (static data). */
typedef json_t *session_render_fn(at_req_t *req, PGresult *res, const void *ctx);
/* Builds the answer of an operation that waited for its job's reply from
 * the job's result (may be NULL) and the queued answer render built. */
typedef json_t *session_reply_fn(at_req_t *req, const json_t *result, const json_t *queued,
                                 const void *ctx);
json_t *session_json(const PGresult *res, int row);
const char *session_owner(const PGresult *res, int row);
long long session_queue_length(const PGresult *res, int row);
const char *session_extra(const PGresult *res, int row);
int session_tier(at_req_t *req, const char *name, int *cpu_millis, int *memory_mb);
void session_create(at_req_t *req, int64_t user_id, const char *external_id,
                    const char *workspace_name, const char *tier, const char *name,
                    const char *language, session_render_fn *render);
void session_find(at_req_t *req, const char *uuid, int64_t scope, session_render_fn *render,
                  const void *ctx);
void session_list(at_req_t *req, int64_t scope, int include_terminated, int limit, int offset,
                  session_render_fn *render, const void *ctx);
void session_delete(at_req_t *req, const char *uuid, int64_t scope, const char *message);
void session_action(at_req_t *req, const char *uuid, int64_t scope, const char *kind,
                    const json_t *args, const char *chat_message, session_render_fn *render,
                    session_reply_fn *reply, const void *ctx);
void session_shutdown(at_req_t *req, const char *id, int64_t scope, session_render_fn *render,
                      session_reply_fn *reply);

#endif
