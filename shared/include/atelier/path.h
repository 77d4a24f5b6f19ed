/*
 * Workspace paths from clients. Every path that comes in (URL, JSON body,
 * multipart file name, archive entry) goes through at_path_confine once; what
 * comes out is relative, '/'-separated, without empty, "." or ".." segments,
 * valid UTF-8 with no control characters, and within the length limits, so it
 * can only name something inside its workspace.
 */
#ifndef ATELIER_PATH_H
#define ATELIER_PATH_H

#include <stddef.h>

#include "err.h"

#define AT_PATH_MAX 4096 /* bytes, whole path */
#define AT_NAME_MAX 255  /* bytes, one segment */

/* Normalise in (len bytes, may contain NUL, which is refused) into out
 * (cap >= AT_PATH_MAX + 1). "a//b/./c/" becomes "a/b/c". Refused, with a
 * reason for the client in *why: empty, absolute, "..", backslash, NUL or
 * other control characters, invalid UTF-8, a segment over AT_NAME_MAX, a
 * path over AT_PATH_MAX. */
at_err_t at_path_confine(const char *in, size_t len, char *out, size_t cap, const char **why);

/* Last segment of a normalised path. */
const char *at_path_base(const char *path);

/* True if buf is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int at_utf8_valid(const char *buf, size_t len);

#endif
