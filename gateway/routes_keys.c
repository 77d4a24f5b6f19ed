/* PLACEHOLDER: being written. */
#include "routes.h"

void route_key_create(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_key_list(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_key_delete(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

