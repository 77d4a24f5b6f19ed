/* PLACEHOLDER: being written. */
#include "routes.h"

void route_session_list(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_session_create(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_session_get(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_session_delete(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

