#include "sandbox_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/util.h"

char g_err[1024];

double ms_since(int64_t t0)
{
    return (double)(at_mono_us() - t0) / 1000.0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

pid_t fork_with_pipe(int p[2])
{
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    close(pid == 0 ? p[0] : p[1]);
    return pid;
}
