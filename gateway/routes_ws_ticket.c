/*
 * POST /api/ws-ticket[?user_id=]: a short-lived, single-use credential for
 * WS /ws?ticket=... (browsers cannot set headers on a WebSocket). 32 random
 * bytes (base64url), kept in Redis as wsticket:{ticket} -> "<user id>
 * <cache key of the token or key it was made with>" (so that revoking that
 * credential closes the connection too) for
 * WS_TICKET_TTL_S seconds and taken with GETDEL by the gateway the client
 * connects to (any instance). A service key must name the user.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "routes.h"

#define WS_TICKET_TTL_S 30
#define WS_TICKET_BYTES 32

typedef struct ticket_req {
    at_req_t *req;
    char ticket[64];
} ticket_req_t;

static void stored(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    ticket_req_t *t = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        at_error("event=ws_ticket_failed req=%s error=\"%s\"", req_id(t->req),
                 at_redis_reply_error(reply));
        req_error(t->req, 503, "Redis unavailable");
    } else {
        req_json(t->req, 200,
                 json_pack("{s:s, s:i}", "ticket", t->ticket, "expires_in", WS_TICKET_TTL_S));
    }
    free(t);
}

void route_ws_ticket(at_req_t *req)
{
    int64_t user = auth_scope(req, req_query(req, "user_id"));
    if (user < 0)
        return;
    if (user == 0) {
        req_error(req, 422, "A service key must name the user the ticket is for (?user_id=)");
        return;
    }
    ticket_req_t *t = calloc(1, sizeof *t);
    if (!t) {
        req_error(req, 503, "Out of memory");
        return;
    }
    t->req = req;
    at_random_token("", WS_TICKET_BYTES, t->ticket, sizeof t->ticket);
    char key[96], uid[128], ttl[16];
    const char *cred = req_principal(req)->cred_key;
    snprintf(key, sizeof key, "wsticket:%s", t->ticket);
    snprintf(uid, sizeof uid, "%lld%s%s", (long long)user, cred[0] ? " " : "", cred);
    snprintf(ttl, sizeof ttl, "%d", WS_TICKET_TTL_S);
    const char *argv[] = {"SET", key, uid, "EX", ttl};
    if (at_redis_argv(req_gw(req)->ws_redis, stored, t, 5, argv, NULL) != AT_OK) {
        free(t);
        req_error(req, 503, "Redis unavailable");
    }
}
