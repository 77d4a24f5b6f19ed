/* Character classes that more than one codec of the gateway needs: file
 * names in multipart bodies and Content-Disposition (RFC 5987), and
 * PostgreSQL's bytea hex output (zipstream). */
#ifndef GATEWAY_CHARS_H
#define GATEWAY_CHARS_H

#include <string.h>

/* The value of a hexadecimal digit (either case), -1 for any other char. */
static inline int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 5987 attr-char: what filename* carries as is; anything else is %XX. */
static inline int attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$&+-.^_`|~", c));
}

#endif
