/*
 * Client API v3.1 (client-api-v3.1.md): /session/create, /session/{uuid}/...,
 * /sessions and /workspace/{id}/shutdown. Callers are an X-API-Key acting
 * for any user, or a user (token or bound key) acting for itself.
 *
 * The records, jobs and audit rows are written by the session operations of
 * routes_sessions.c, shared with the FastAPI family; this file reads the
 * Client API's requests and renders its answers. Sleep, wake, scale, chat
 * and shutdown are queued for the session manager and answered 202 with the
 * job id: nothing here claims the work is done.
 */
#include <stdlib.h>
#include <string.h>

#include "atelier/util.h"
#include "records.h"
#include "routes.h"
#include "sessions.h"

#define CLIENT_USER_ID_MAX 255        /* bytes of the Client API's user_id */
#define CHAT_MESSAGE_MAX 65536        /* bytes of one chat message */
#define CLIENT_LIST_MAX 1000          /* sessions one GET /sessions answer holds */
#define DEFAULT_WORKSPACE "workspace" /* the S3 workspace API's default name */

/* cfg.workspace_url_template with every "{uuid}" replaced. */
static json_t *workspace_url(at_req_t *req, const char *uuid)
{
    const char *tpl = req_gw(req)->cfg.workspace_url_template;
    size_t n = 0, ulen = strlen(uuid);
    for (const char *p = tpl; (p = strstr(p, "{uuid}")); p += 6)
        n++;
    char *out = malloc(strlen(tpl) + n * ulen + 1), *o = out; /* every occurrence counted */
    if (!out)
        return json_null();
    for (const char *p = tpl; *p;) {
        if (!strncmp(p, "{uuid}", 6)) {
            memcpy(o, uuid, ulen);
            o += ulen;
            p += 6;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    json_t *j = json_string(out);
    free(out);
    return j ? j : json_null();
}

/* A new reference to one field of the session object (null when missing). */
static json_t *field(json_t *session, const char *name)
{
    json_t *v = json_object_get(session, name);
    return v ? json_incref(v) : json_null();
}

/* The caller's scope for the Client API: a service key sees every user's
 * sessions, a user only its own (the Client API has no numeric user_id). */
static int64_t client_scope(at_req_t *req)
{
    return auth_scope(req, NULL);
}

/* ---- POST /session/create ----------------------------------------------------- */

static json_t *render_create(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)ctx;
    json_t *s = session_json(res, 0);
    const char *owner = session_owner(res, 0);
    json_t *o =
        json_pack("{s:o, s:s?, s:s, s:o, s:o}", "uuid", field(s, "uuid"), "user_id", owner,
                  "status", "created", "created_at", field(s, "created_at"), "workspace_url",
                  workspace_url(req, json_string_value(json_object_get(s, "uuid"))));
    json_decref(s);
    return o;
}

/* {"user_id": "john@example.com"}: that user's (found or created) default
 * workspace gets a new session. A user may name only itself. */
void route_client_create(at_req_t *req)
{
    json_t *body = req_json_body_optional(req);
    if (!body)
        return;
    json_t *juid = json_object_get(body, "user_id");
    const char *ext = json_string_value(juid);
    const principal_t *pr = req_principal(req);
    int bad = 0;
    if (juid && !json_is_null(juid)) {
        size_t n = ext ? strlen(ext) : 0;
        bad = n == 0 || n > CLIENT_USER_ID_MAX;
        for (size_t i = 0; !bad && i < n; i++)
            bad = (unsigned char)ext[i] < 0x20 || ext[i] == 0x7f;
    }
    if (bad)
        req_error(req, 422,
                  "user_id must be a string of 1..%d characters without control characters",
                  CLIENT_USER_ID_MAX);
    else if (pr->service && !ext)
        req_error(req, 422, "user_id is required when acting with a service key");
    else
        session_create(req, pr->service ? 0 : pr->user_id, ext, DEFAULT_WORKSPACE, "standard", NULL,
                       NULL, render_create);
    json_decref(body);
}

/* ---- GET /session/{uuid}/status ----------------------------------------------- */

static json_t *render_status(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    json_t *s = session_json(res, 0);
    json_t *inner =
        json_pack("{s:s?, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "user_id",
                  session_owner(res, 0), "status", field(s, "status"), "created_at",
                  field(s, "created_at"), "last_activity", field(s, "last_activity"),
                  "last_activity_kind", field(s, "last_activity_kind"), "tier", field(s, "tier"),
                  "cpu_millis", field(s, "cpu_millis"), "memory_mb", field(s, "memory_mb"),
                  "status_message", field(s, "status_message"), "oom_kills", field(s, "oom_kills"),
                  "memory_bytes", field(s, "memory_bytes"), "disk_used_bytes",
                  field(s, "disk_used_bytes"), "disk_total_bytes", field(s, "disk_total_bytes"));
    json_t *o =
        json_pack("{s:o, s:o, s:o, s:I}", "uuid", field(s, "uuid"), "session", inner, "replicas",
                  field(s, "replicas"), "queue_length", (json_int_t)session_queue_length(res, 0));
    json_decref(s);
    return o;
}

void route_client_status(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_find(req, req_param(req, 0), scope, render_status, NULL);
}

/* ---- GET /sessions -------------------------------------------------------------- */

static json_t *render_list(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)ctx;
    json_t *a = json_array();
    for (int i = 0; a && i < PQntuples(res); i++) {
        json_t *s = session_json(res, i);
        json_array_append_new(
            a, json_pack("{s:o, s:s?, s:o, s:o, s:o, s:o, s:o, s:o}", "uuid", field(s, "uuid"),
                         "user_id", session_owner(res, i), "status", field(s, "status"), "replicas",
                         field(s, "replicas"), "tier", field(s, "tier"), "created_at",
                         field(s, "created_at"), "last_activity", field(s, "last_activity"),
                         "workspace_url",
                         workspace_url(req, json_string_value(json_object_get(s, "uuid")))));
        json_decref(s);
    }
    return json_pack("{s:o, s:I}", "sessions", a, "count", (json_int_t)PQntuples(res));
}

/* Live (not terminated) sessions the caller may see, newest first. */
void route_client_list(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_list(req, scope, 0, CLIENT_LIST_MAX, 0, render_list, NULL);
}

/* ---- DELETE /session/{uuid} ------------------------------------------------------ */

void route_client_delete(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_delete(req, req_param(req, 0), scope,
                       "Session deletion queued (backup, then cleanup)");
}

/* ---- sleep, wake, scale ---------------------------------------------------------- */

/* The seed's answers (client-api-v3.1.md): {uuid, action, status} once the
 * manager has done it; while it is still queued after the reply timeout,
 * 202 with status "queued", the job and a message. */
typedef struct action_answer {
    const char *action;
    const char *done_status; /* the seed's status once done */
    const char *message;     /* while queued */
} action_answer_t;

static const action_answer_t sleep_answer = {
    "sleep", "sleeping", "Sleep queued: the sandbox stops, the workspace stays; poll the status"};
static const action_answer_t wake_answer = {
    "wake", "waking", "Wake queued: the sandbox starts again; poll the status"};
static const action_answer_t scale_up_answer = {
    "scale_up", "success", "Scale up queued: 2 CPU, 2 GiB once the session manager applies it"};
static const action_answer_t scale_down_answer = {
    "scale_down", "success", "Scale down queued: 1 CPU, 1 GiB once the session manager applies it"};

static json_t *render_action(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    const action_answer_t *a = ctx;
    json_t *s = session_json(res, 0);
    json_t *o =
        json_pack("{s:o, s:s, s:s, s:o, s:s}", "uuid", field(s, "uuid"), "action", a->action,
                  "status", "queued", "job_id", field(s, "job_id"), "message", a->message);
    json_decref(s);
    return o;
}

/* Done: the seed's body, plus the job (and, for scale, the limits now set). */
static json_t *render_action_done(at_req_t *req, const json_t *result, const json_t *queued,
                                  const void *ctx)
{
    (void)req;
    const action_answer_t *a = ctx;
    json_t *o =
        json_pack("{s:O, s:s, s:s, s:O}", "uuid", json_object_get(queued, "uuid"), "action",
                  a->action, "status", a->done_status, "job_id", json_object_get(queued, "job_id"));
    json_t *cpu = json_object_get(result, "cpu_millis"),
           *mem = json_object_get(result, "memory_mb");
    if (o && cpu && mem) {
        json_object_set(o, "cpu_millis", cpu);
        json_object_set(o, "memory_mb", mem);
    }
    return o;
}

void route_client_sleep(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_action(req, req_param(req, 0), scope, "sleep", NULL, NULL, render_action,
                       render_action_done, &sleep_answer);
}

void route_client_wake(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_action(req, req_param(req, 0), scope, "wake", NULL, NULL, render_action,
                       render_action_done, &wake_answer);
}

/* {"scale": "up"|"down"}: up to the large tier, down to the standard one;
 * the job's args carry the target so the runtime need not know tiers. */
void route_client_scale(at_req_t *req)
{
    json_t *body = req_json_body(req);
    if (!body)
        return;
    const char *scale = json_string_value(json_object_get(body, "scale"));
    int up = scale && !strcmp(scale, "up"), down = scale && !strcmp(scale, "down");
    int64_t scope;
    int cpu = 0, mem = 0;
    if (!up && !down) {
        req_error(req, 422, "scale must be \"up\" or \"down\"");
    } else if ((scope = client_scope(req)) >= 0) {
        const char *tier = up ? "large" : "standard";
        session_tier(req, tier, &cpu, &mem);
        json_t *args = json_pack("{s:s, s:s, s:i, s:i}", "scale", scale, "tier", tier, "cpu_millis",
                                 cpu, "memory_mb", mem);
        session_action(req, req_param(req, 0), scope, "scale", args, NULL, render_action,
                       render_action_done, up ? &scale_up_answer : &scale_down_answer);
        json_decref(args);
    }
    json_decref(body);
}

/* ---- POST /session/{uuid}/chat ----------------------------------------------------- */

static json_t *render_chat(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    json_t *s = session_json(res, 0);
    const char *mid = session_extra(res, 0);
    json_t *o = json_pack("{s:o, s:I, s:o, s:s}", "uuid", field(s, "uuid"), "message_id",
                          (json_int_t)(mid ? strtoll(mid, NULL, 10) : 0), "job_id",
                          field(s, "job_id"), "status", "queued");
    json_decref(s);
    return o;
}

void route_client_chat(at_req_t *req)
{
    json_t *body = req_json_body(req);
    if (!body)
        return;
    const char *msg = json_string_value(json_object_get(body, "message"));
    size_t n = msg ? json_string_length(json_object_get(body, "message")) : 0;
    int64_t scope;
    if (!msg || n == 0 || n > CHAT_MESSAGE_MAX || strlen(msg) != n)
        req_error(req, 422, "message must be a string of 1..%d bytes", CHAT_MESSAGE_MAX);
    else if ((scope = client_scope(req)) >= 0)
        session_action(req, req_param(req, 0), scope, "chat", NULL, msg, render_chat, NULL, NULL);
    json_decref(body);
}

/* ---- POST /workspace/{id}/shutdown -------------------------------------------------- */

static json_t *render_shutdown(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    json_t *s = session_json(res, 0);
    json_t *o = json_pack("{s:b, s:s, s:s, s:o, s:o}", "success", 1, "message",
                          "Workspace shutdown queued", "workspace_id", session_extra(res, 0),
                          "session_id", field(s, "uuid"), "job_id", field(s, "job_id"));
    json_decref(s);
    return o;
}

/* Done (workspace-api.md): the sandbox and the volume are gone, the files
 * stay in the database. active_connections: terminals attached when it
 * stopped (none survive a shutdown). */
static json_t *render_shutdown_done(at_req_t *req, const json_t *result, const json_t *queued,
                                    const void *ctx)
{
    (void)req;
    (void)ctx;
    int kept = json_is_true(json_object_get(result, "volume_kept"));
    return json_pack("{s:b, s:s, s:O, s:O, s:i, s:b, s:b, s:O}", "success", 1, "message",
                     "Workspace shutdown completed", "workspace_id",
                     json_object_get(queued, "workspace_id"), "session_id",
                     json_object_get(queued, "session_id"), "active_connections", 0, "pod_deleted",
                     1, "pvc_deleted", !kept, "job_id", json_object_get(queued, "job_id"));
}

/* {id}: a session uuid or a workspace id; the workspace's live session is
 * shut down (409 when it has none). */
void route_workspace_shutdown(at_req_t *req)
{
    int64_t scope = client_scope(req);
    if (scope >= 0)
        session_shutdown(req, req_param(req, 0), scope, render_shutdown, render_shutdown_done);
}
