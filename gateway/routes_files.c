/* PLACEHOLDER: being written. */
#include "routes.h"

void route_files_list(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_file_get(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_file_put(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_file_delete(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_workspace_status(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_workspace_defaults(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_folder_create(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_file_move(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

