/* One line per event: "level=info proc=gateway key=value ...". */
#ifndef ATELIER_LOG_H
#define ATELIER_LOG_H

typedef enum { AT_LOG_DEBUG = 0, AT_LOG_INFO, AT_LOG_WARN, AT_LOG_ERROR } at_log_level_t;

/* Set once at start-up; proc is the role name printed on every line. */
void at_log_init(const char *proc, at_log_level_t min_level);
int at_log_parse_level(const char *s, at_log_level_t *out);
at_log_level_t at_log_level(void);

/* fmt is the rest of the line, in key=value form. */
void at_log(at_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define at_debug(...) at_log(AT_LOG_DEBUG, __VA_ARGS__)
#define at_info(...) at_log(AT_LOG_INFO, __VA_ARGS__)
#define at_warn(...) at_log(AT_LOG_WARN, __VA_ARGS__)
#define at_error(...) at_log(AT_LOG_ERROR, __VA_ARGS__)

#endif
