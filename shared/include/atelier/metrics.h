/*
 * Prometheus text-format metrics: counters, gauges and histograms in one
 * process-wide registry. A metric is found or created by name and label set
 * ("role=\"sync\",kind=\"ping\""); keep the handle where the call is hot.
 */
#ifndef ATELIER_METRICS_H
#define ATELIER_METRICS_H

#include <stddef.h>

typedef struct at_metric at_metric_t;

at_metric_t *at_metrics_counter(const char *name, const char *help, const char *labels);
at_metric_t *at_metrics_gauge(const char *name, const char *help, const char *labels);
/* Buckets in milliseconds from 0.1 ms to 10 s. */
at_metric_t *at_metrics_histogram(const char *name, const char *help, const char *labels);

void at_metric_add(at_metric_t *m, double v); /* counter, gauge */
void at_metric_set(at_metric_t *m, double v); /* gauge */
void at_metric_observe(at_metric_t *m, double v);

/* Render the whole registry; extra_labels (may be NULL) are added to every
 * sample, e.g. "instance=\"w1\"". Returns a malloc'd string. */
char *at_metrics_render(const char *extra_labels);

/* Merge several rendered texts into one valid exposition: each family's
 * HELP and TYPE once, then all its samples. Returns a malloc'd string. */
char *at_metrics_merge(const char *const *texts, size_t n);

void at_metrics_reset(void); /* tests */

#endif
