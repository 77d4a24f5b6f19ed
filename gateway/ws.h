/*
 * WS /ws: terminals and session events over WebSocket, on the same port as
 * the HTTP API (the protocol is the "websocket" section of openapi.json,
 * served at /docs; ws_internal.h lists the files). The HTTP protocol entry
 * is wrapped: an upgrade on /ws is checked (credentials, limits) before it
 * is accepted, and the connection's frames are served here; everything
 * else goes to http.c.
 */
#ifndef GATEWAY_WS_H
#define GATEWAY_WS_H

#include <libwebsockets.h>

#include "gateway.h"

/* The vhost's protocol table: "http" (HTTP and WebSocket connections
 * without a subprotocol), "atelier.v1", the entry that answers a
 * credential offered as subprotocol, and the terminator. */
#define WS_PROTOCOLS 4
void ws_protocols(struct lws_protocols out[WS_PROTOCOLS]);

/* lws pings a WebSocket silent this long and drops it if no pong comes. */
extern const lws_retry_bo_t ws_idle_policy;

/* The pub/sub link and tables; before the lws context. */
int ws_init(gateway_t *gw);
/* After the lws context, the database and the Redis clients are gone. */
void ws_shutdown(gateway_t *gw);
/* WebSocket connections open now. */
int ws_connections(void);
/* A token or key was revoked (cache key "t:<hash>" / "k:<hash>"): the
 * connections it opened, directly or through a ticket, are closed (1008). */
void ws_revoked(const char *cred_key);

#endif
