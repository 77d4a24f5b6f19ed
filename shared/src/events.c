#include "atelier/events.h"

#include <stdio.h>
#include <stdlib.h>

#include "atelier/log.h"
#include "atelier/util.h"

void at_event_publish(at_redis_t *r, const char *session, json_t *ev)
{
    char ts[32], ch[64];
    at_iso8601(at_wall_ms(), ts);
    json_object_set_new(ev, "sessionId", json_string(session));
    json_object_set_new(ev, "timestamp", json_string(ts));
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    if (!text)
        return;
    snprintf(ch, sizeof ch, "ev:%s", session);
    const char *argv[] = {"PUBLISH", ch, text};
    if (at_redis_argv(r, NULL, NULL, 3, argv, NULL) != AT_OK)
        at_warn("event=publish_failed session=%s", session);
    free(text);
}
