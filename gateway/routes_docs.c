/* PLACEHOLDER: being written. */
#include "routes.h"

void route_openapi(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_docs(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_docs_asset(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

