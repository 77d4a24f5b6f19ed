/* One error type for the whole code base (curl's CURLcode, in spirit). */
#ifndef ATELIER_ERR_H
#define ATELIER_ERR_H

typedef enum {
    AT_OK = 0,
    AT_EINVAL,    /* bad argument or malformed input */
    AT_ENOMEM,    /* allocation failed */
    AT_ENOTFOUND, /* no such record / key */
    AT_ETOOBIG,   /* input larger than its limit */
    AT_EIO,       /* system call failed (see errno in the log) */
    AT_EDB,       /* PostgreSQL error */
    AT_EREDIS,    /* Redis error */
    AT_EBUSY,     /* a bounded queue or pool is full */
    AT_ETIMEOUT,  /* deadline passed */
    AT_ECLOSED,   /* connection closed or process shutting down */
    AT_ECONFIG,   /* bad configuration value */
} at_err_t;

const char *at_strerror(at_err_t err);

#endif
