/* test_tmpdir.h: a temporary folder per test, for the suites that write
 * files (test_cli.c, test_npy.c). Criterion runs each test in its own
 * process, so the folder's name is per-process state: the suite's .init
 * makes it under the build root, its .fini empties and removes it.
 *
 * Define TMPDIR_TAG (a short string) before including: the folder is
 * "<build root>/<tag>-test-XXXXXX". */
#ifndef LOSSKIT_TEST_TMPDIR_H
#define LOSSKIT_TEST_TMPDIR_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TMPDIR_TAG
#error "define TMPDIR_TAG before including test_tmpdir.h"
#endif

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/%s-test-XXXXXX", LK_BUILD_ROOT, TMPDIR_TAG);
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp %s: %s", tmpdir, strerror(errno));
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

/* A path in the temporary folder, in one of eight static buffers used in
 * turn (so up to eight can be live in one expression). */
static const char *tmp(const char *name)
{
    static char bufs[8][PATH_MAX + 64];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

#endif
