/* PLACEHOLDER: being written. */
#include "routes.h"

void route_client_create(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_status(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_list(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_delete(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_sleep(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_wake(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_scale(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_client_chat(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_workspace_shutdown(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

