/* PLACEHOLDER: being written. */
#include "routes.h"

void route_user_register(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_user_login(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_user_logout(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_user_list(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

void route_user_me(at_req_t *req)
{
    req_error(req, 501, "Not implemented yet");
}

