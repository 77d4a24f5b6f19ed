/*
 * Session events for clients (ARCHITECTURE.md): a JSON object published on
 * ev:{session}, which every gateway with a client watching that session
 * passes on over WebSocket (gateway/ws_events.c).
 */
#ifndef ATELIER_EVENTS_H
#define ATELIER_EVENTS_H

#include <jansson.h>

#include "redis.h"

/* Publish ev ({"type": ..., ...}; stolen) with "sessionId" and "timestamp"
 * added. Best effort: a client that missed it reads the state from the API. */
void at_event_publish(at_redis_t *r, const char *session, json_t *ev);

#endif
