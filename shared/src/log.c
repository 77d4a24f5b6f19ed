#include "atelier/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "atelier/util.h"

static const char *g_proc = "atelier";
static at_log_level_t g_min = AT_LOG_INFO;
static const char *const g_names[] = {"debug", "info", "warn", "error"};

void at_log_init(const char *proc, at_log_level_t min_level)
{
    g_proc = proc;
    g_min = min_level;
}

at_log_level_t at_log_level(void)
{
    return g_min;
}

int at_log_parse_level(const char *s, at_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, g_names[i]) == 0) {
            *out = (at_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* One write(2)-sized line per event so lines from several processes sharing a
 * log never interleave mid-line. */
void at_log(at_log_level_t level, const char *fmt, ...)
{
    if (level < g_min)
        return;
    char line[2048];
    char ts[32];
    at_iso8601(at_wall_ms(), ts);
    int n = snprintf(line, sizeof line, "level=%s ts=%s proc=%s ", g_names[level], ts, g_proc);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
