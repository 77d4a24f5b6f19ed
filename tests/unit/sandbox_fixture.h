/* Helpers shared by the sandbox tests (test_cgroup, test_volume, test_bwrap,
 * test_seccomp): the error buffer every call under test writes into, a CHECK that prints it
 * when a call fails, a millisecond timer for the timings they report, a
 * recursive remove for their scratch directories and a fork with a pipe back
 * (test_seccomp uses only that one). */
#ifndef ATELIER_TEST_SANDBOX_FIXTURE_H
#define ATELIER_TEST_SANDBOX_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/types.h>

#include "atelier/err.h"

extern char g_err[1024]; /* errbuf of the last call under test */

/* Assert that call returns AT_OK, printing the call and g_err otherwise. */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        g_err[0] = '\0';                                                                           \
        at_err_t rc_ = (call);                                                                     \
        if (rc_ != AT_OK)                                                                          \
            print_message("%s -> %d: %s\n", #call, (int)rc_, g_err);                               \
        assert_int_equal(rc_, AT_OK);                                                              \
    } while (0)

/* Milliseconds since t0 (an at_mono_us() reading). */
double ms_since(int64_t t0);

/* Remove the tree at path, depth first, staying on its filesystem and never
 * following a symlink (a still-mounted volume below it is left alone). */
void rm_tree(const char *path);

/* Fork with a pipe from the child back to the parent: in the child only the
 * write end p[1] stays open, in the parent only the read end p[0]. Returns
 * fork's pid (0 in the child); asserts that pipe and fork worked. */
pid_t fork_with_pipe(int p[2]);

#endif
