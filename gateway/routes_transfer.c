/* PLACEHOLDER: being written. */
#include "routes.h"

void route_upload(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_download_file(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_download_zip(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

