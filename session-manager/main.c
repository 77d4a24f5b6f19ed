/* atelier-session-manager: consumes q:session. This issue gives it the common job kinds
 * (ping, selftest); its own handlers arrive with later issues. */
#include "atelier/worker.h"

int main(int argc, char **argv)
{
    static const at_worker_def_t def = {
        .role = "session",
        .proc = "session-manager",
        .handlers = NULL,
        .nhandlers = 0,
    };
    return at_worker_main(&def, argc, argv);
}
