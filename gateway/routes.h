/* The route table: method + path pattern -> handler. */
#ifndef GATEWAY_ROUTES_H
#define GATEWAY_ROUTES_H

#include "http.h"

typedef void route_fn(at_req_t *req);

typedef struct route {
    int method;
    const char *pattern; /* "/api/jobs/{id}"; "{path*}" captures the rest */
    route_fn *fn;
} route_t;

/* Find and run the handler; answers 404/405 itself. */
void routes_dispatch(at_req_t *req);

/* handlers, by file */
void route_health(at_req_t *req);          /* routes_health.c */
void route_health_detailed(at_req_t *req); /* routes_health.c */
void route_health_probe(at_req_t *req);    /* routes_health.c */
void route_metrics(at_req_t *req);         /* routes_metrics.c */
void route_job_get(at_req_t *req);         /* routes_jobs.c */
void route_job_create(at_req_t *req);      /* routes_jobs.c */

#endif
