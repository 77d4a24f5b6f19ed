/* Small helpers every module needs: clocks, ids, bounded strings. */
#ifndef ATELIER_UTIL_H
#define ATELIER_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define AT_UUID_LEN 36 /* without the NUL */

/* Milliseconds since the Unix epoch (wall clock). */
int64_t at_wall_ms(void);
/* Monotonic clock in microseconds, for measuring durations. */
int64_t at_mono_us(void);
/* Random version-4 UUID into out[AT_UUID_LEN + 1]. */
void at_uuid4(char out[AT_UUID_LEN + 1]);
/* Fill buf with n random bytes from the kernel; never fails silently (aborts if
 * the kernel has no entropy source, which breaks an invariant). */
void at_random_bytes(void *buf, size_t n);
/* ISO 8601 UTC with milliseconds ("2026-01-01T00:00:00.000Z"). */
void at_iso8601(int64_t wall_ms, char out[32]);
/* Copy at most cap-1 bytes and NUL-terminate; returns 1 if truncated. */
int at_strlcpy(char *dst, const char *src, size_t cap);
/* True if s is a syntactically valid UUID (any version). */
int at_is_uuid(const char *s);

#endif
