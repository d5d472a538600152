/* test_paths.h: the kernel paths a loss can be created on, for the suites
 * that run a case on each (test_torch.c, test_gradcheck.c).
 *
 * create() reads LOSSKIT_SIMD: the portable lanes ("0"), at most AVX2
 * ("avx2", float lanes for float32 data and double lanes for float64), and
 * the best the CPU has (unset: AVX-512 float lanes for float32 where it
 * has them). On a CPU without some of them two paths are the same kernels,
 * and their comparison trivially exact. */
#ifndef LOSSKIT_TEST_PATHS_H
#define LOSSKIT_TEST_PATHS_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"

enum { PATH_PORTABLE, PATH_AVX2, PATH_BEST, N_PATHS };
static const char *const path_names[N_PATHS] = {"portable", "avx2", "best"};

/* Creates the loss on a path. The environment is restored after the
 * creation (the choice holds for the loss's life), so that the other
 * suites keep honouring a LOSSKIT_SIMD=0 run. */
static inline lk_loss *make_loss_on(lk_runtime *rt, const char *config, int path)
{
    const char *env = getenv("LOSSKIT_SIMD");
    char *saved = env ? strdup(env) : NULL;
    if (path == PATH_BEST)
        unsetenv("LOSSKIT_SIMD");
    else
        setenv("LOSSKIT_SIMD", path == PATH_PORTABLE ? "0" : "avx2", 1);
    char err[LK_ERRMSG_CAP] = "";
    lk_loss *loss = NULL;
    lk_status st = lk_loss_from_json(rt, config, strlen(config), "test", &loss, err);
    if (saved)
        setenv("LOSSKIT_SIMD", saved, 1);
    else
        unsetenv("LOSSKIT_SIMD");
    free(saved);
    cr_assert_eq(st, LK_OK, "config %s: %s (%s)", config, err, lk_status_name(st));
    return loss;
}

#endif
