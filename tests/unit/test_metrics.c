/*
 * Prometheus text exposition: the exact output of at_metrics_render for a
 * small registry, and at_metrics_merge of the texts of two processes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "atelier/metrics.h"

static int reset(void **state)
{
    (void)state;
    at_metrics_reset();
    return 0;
}

/* Occurrences of needle in hay, counted as whole lines. */
static int count_lines(const char *hay, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = hay; (p = strstr(p, line)) != NULL; p += len)
        if ((p == hay || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
            n++;
    return n;
}

static void fill_registry(void)
{
    /* two series of one family, created apart: they must still render together */
    at_metric_t *ping = at_metrics_counter("atelier_jobs_total", "Jobs run.", "kind=\"ping\"");
    at_metric_t *depth = at_metrics_gauge("atelier_queue_depth", "Entries waiting.", NULL);
    at_metric_t *pong = at_metrics_counter("atelier_jobs_total", "Jobs run.", "kind=\"pong\"");
    at_metric_t *ms = at_metrics_histogram("atelier_job_ms", "Job latency.", "kind=\"ping\"");
    assert_non_null(ping);
    assert_non_null(depth);
    assert_non_null(pong);
    assert_non_null(ms);
    at_metric_add(ping, 2);
    at_metric_add(ping, 1);
    at_metric_add(pong, 0.5);
    at_metric_set(depth, 7);
    at_metric_set(depth, 4);
    /* 0.25 sits on a bucket bound (le is inclusive); 20000 is past the last */
    at_metric_observe(ms, 0.25);
    at_metric_observe(ms, 7);
    at_metric_observe(ms, 20000);
    /* the same name and labels give the same handle */
    assert_ptr_equal(at_metrics_counter("atelier_jobs_total", "Jobs run.", "kind=\"ping\""), ping);
}

static void test_render_exact(void **state)
{
    (void)state;
    fill_registry();
    char *text = at_metrics_render("instance=\"w1\"");
    assert_non_null(text);
    static const char *const want =
        "# HELP atelier_jobs_total Jobs run.\n"
        "# TYPE atelier_jobs_total counter\n"
        "atelier_jobs_total{kind=\"ping\",instance=\"w1\"} 3\n"
        "atelier_jobs_total{kind=\"pong\",instance=\"w1\"} 0.5\n"
        "# HELP atelier_queue_depth Entries waiting.\n"
        "# TYPE atelier_queue_depth gauge\n"
        "atelier_queue_depth{instance=\"w1\"} 4\n"
        "# HELP atelier_job_ms Job latency.\n"
        "# TYPE atelier_job_ms histogram\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"0.1\"} 0\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"0.25\"} 1\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"0.5\"} 1\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"1\"} 1\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"2.5\"} 1\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"5\"} 1\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"10\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"25\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"50\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"100\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"250\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"500\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"1000\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"2500\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"5000\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"10000\"} 2\n"
        "atelier_job_ms_bucket{kind=\"ping\",instance=\"w1\",le=\"+Inf\"} 3\n"
        "atelier_job_ms_sum{kind=\"ping\",instance=\"w1\"} 20007.25\n"
        "atelier_job_ms_count{kind=\"ping\",instance=\"w1\"} 3\n";
    assert_string_equal(text, want);
    free(text);
}

static void test_render_without_labels(void **state)
{
    (void)state;
    at_metric_t *up = at_metrics_gauge("atelier_up", "1 while running.", "");
    at_metric_set(up, 1);
    at_metric_t *h = at_metrics_histogram("atelier_wait_ms", "Wait.", NULL);
    at_metric_observe(h, 1);
    char *text = at_metrics_render(NULL);
    assert_non_null(text);
    assert_int_equal(count_lines(text, "atelier_up 1"), 1);
    assert_int_equal(count_lines(text, "atelier_wait_ms_bucket{le=\"0.5\"} 0"), 1);
    assert_int_equal(count_lines(text, "atelier_wait_ms_bucket{le=\"1\"} 1"), 1);
    assert_int_equal(count_lines(text, "atelier_wait_ms_bucket{le=\"+Inf\"} 1"), 1);
    assert_int_equal(count_lines(text, "atelier_wait_ms_sum 1"), 1);
    assert_int_equal(count_lines(text, "atelier_wait_ms_count 1"), 1);
    assert_null(strstr(text, "{}"));
    free(text);

    /* an empty registry renders as an empty (not NULL) text */
    at_metrics_reset();
    text = at_metrics_render("instance=\"w1\"");
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
}

/* Every line of part appears, as a line, in whole. */
static void assert_lines_in(const char *part, const char *whole)
{
    char *copy = strdup(part);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        if (count_lines(whole, line) != 1)
            fail_msg("sample \"%s\" appears %d times in the merged text", line,
                     count_lines(whole, line));
    }
    free(copy);
}

/* The sample's family header comes before it with no other header between. */
static void assert_grouped(const char *merged, const char *sample, const char *family)
{
    const char *s = strstr(merged, sample);
    assert_non_null(s);
    char help[128];
    snprintf(help, sizeof help, "# HELP %s ", family);
    const char *h = strstr(merged, help);
    assert_non_null(h);
    assert_true(h < s);
    for (const char *p = h + 1; p < s; p++)
        if (p[-1] == '\n' && !strncmp(p, "# HELP ", 7))
            fail_msg("\"%s\" is not under the header of %s", sample, family);
}

static void test_merge(void **state)
{
    (void)state;
    fill_registry();
    char *a = at_metrics_render("instance=\"w1\"");
    at_metrics_reset();
    /* the second process shares two families and has one of its own */
    at_metric_add(at_metrics_counter("atelier_jobs_total", "Jobs run.", "kind=\"ping\""), 5);
    at_metric_observe(at_metrics_histogram("atelier_job_ms", "Job latency.", "kind=\"ping\""), 3);
    at_metric_set(at_metrics_gauge("atelier_sandboxes", "Sandboxes by state.", "state=\"up\""), 2);
    char *b = at_metrics_render("instance=\"w2\"");
    const char *texts[] = {a, b};
    char *merged = at_metrics_merge(texts, 2);
    assert_non_null(merged);

    const char *families[][2] = {{"atelier_jobs_total", "counter"},
                                 {"atelier_queue_depth", "gauge"},
                                 {"atelier_job_ms", "histogram"},
                                 {"atelier_sandboxes", "gauge"}};
    for (size_t i = 0; i < 4; i++) {
        char help[128], type[128];
        snprintf(help, sizeof help, "# HELP %s ", families[i][0]);
        snprintf(type, sizeof type, "# TYPE %s %s", families[i][0], families[i][1]);
        int nh = 0;
        for (const char *p = merged; (p = strstr(p, help)) != NULL; p++)
            nh++;
        if (nh != 1 || count_lines(merged, type) != 1)
            fail_msg("family %s: %d HELP and %d TYPE lines, want 1 each", families[i][0], nh,
                     count_lines(merged, type));
    }
    assert_lines_in(a, merged);
    assert_lines_in(b, merged);
    assert_grouped(merged, "atelier_jobs_total{kind=\"ping\",instance=\"w2\"} 5",
                   "atelier_jobs_total");
    assert_grouped(merged, "atelier_job_ms_count{kind=\"ping\",instance=\"w2\"} 1",
                   "atelier_job_ms");
    assert_grouped(merged, "atelier_sandboxes{state=\"up\",instance=\"w2\"} 2",
                   "atelier_sandboxes");
    /* nothing but headers and samples: same number of sample lines */
    int lines_a = 0, lines_b = 0, lines_m = 0;
    for (const char *p = a; *p; p++)
        lines_a += *p == '\n';
    for (const char *p = b; *p; p++)
        lines_b += *p == '\n';
    for (const char *p = merged; *p; p++)
        lines_m += *p == '\n';
    /* a: 3 families, b: 3 families, merged: 4 families; two header lines each */
    assert_int_equal(lines_m - 8, (lines_a - 6) + (lines_b - 6));
    free(merged);

    /* merging one text gives it back; merging none gives an empty text */
    const char *one[] = {a};
    merged = at_metrics_merge(one, 1);
    assert_string_equal(merged, a);
    free(merged);
    merged = at_metrics_merge(NULL, 0);
    assert_non_null(merged);
    assert_string_equal(merged, "");
    free(merged);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_render_exact, reset, reset),
        cmocka_unit_test_setup_teardown(test_render_without_labels, reset, reset),
        cmocka_unit_test_setup_teardown(test_merge, reset, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
