#include "atelier/err.h"

const char *at_strerror(at_err_t err)
{
    switch (err) {
    case AT_OK:
        return "ok";
    case AT_EINVAL:
        return "invalid input";
    case AT_ENOMEM:
        return "out of memory";
    case AT_ENOTFOUND:
        return "not found";
    case AT_ETOOBIG:
        return "too big";
    case AT_EIO:
        return "I/O error";
    case AT_EDB:
        return "database error";
    case AT_EREDIS:
        return "redis error";
    case AT_EBUSY:
        return "busy";
    case AT_ETIMEOUT:
        return "timed out";
    case AT_ECLOSED:
        return "closed";
    case AT_ECONFIG:
        return "bad configuration";
    }
    return "unknown error";
}
