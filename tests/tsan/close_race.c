/* close_race: 8 application threads evaluate one loss (forward and
 * gradient) on an 8-thread runtime while the main thread closes the
 * runtime; the last thread to finish frees the loss, which unloads the
 * plugins. Plain C without Criterion, so that it also runs in a
 * ThreadSanitizer build (.ci/run builds one): there it must report
 * nothing; everywhere, every evaluation must give the same value.
 *
 *   close_race [ROUNDS]   exit 0 when every value agreed */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"

#define APP_THREADS 8
#define N           (1 << 16)

typedef struct shared {
    lk_loss *loss;
    float *x, *t;
    double want;
    atomic_int left;   /* threads still evaluating */
    atomic_int bad;    /* evaluations that failed or disagreed */
    atomic_int started;
    int rounds;
} shared;

static void *worker(void *arg)
{
    shared *s = arg;
    float *grad = malloc(N * sizeof *grad);
    int64_t shape[1] = {N};
    lk_named_tensor named[2] = {
        {"input", {s->x, LK_DTYPE_F32, 1, shape, NULL}, NULL},
        {"target", {s->t, LK_DTYPE_F32, 1, shape, NULL}, NULL},
    };
    lk_named_tensor g = {"input", {grad, LK_DTYPE_F32, 1, shape, NULL}, NULL};
    atomic_fetch_add(&s->started, 1);
    for (int r = 0; grad && r < s->rounds; r++) {
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = named;
        args.n_tensors = 2;
        args.grads = r % 2 ? &g : NULL;
        args.n_grads = r % 2;
        double v = 0.0;
        if (lk_loss_eval(s->loss, &args, &v) != LK_OK || v != s->want) {
            fprintf(stderr, "close_race: round %d: %s value %.17g, want %.17g\n", r, args.errmsg,
                    v, s->want);
            atomic_fetch_add(&s->bad, 1);
        }
    }
    free(grad);
    if (atomic_fetch_sub(&s->left, 1) == 1)
        lk_loss_free(s->loss); /* the last one out unloads the plugins */
    return NULL;
}

int main(int argc, char **argv)
{
    shared s;
    memset(&s, 0, sizeof s);
    s.rounds = argc > 1 ? atoi(argv[1]) : 40;
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.threads = 8;
    opts.use_env_path = 0;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    if (lk_runtime_open(&opts, &rt, err) != LK_OK) {
        fprintf(stderr, "close_race: %s\n", err);
        return 1;
    }
    const char *json = "{\"loss\": \"focal\", \"reduction\": \"mean\"}";
    if (lk_loss_from_json(rt, json, strlen(json), "close_race", &s.loss, err) != LK_OK) {
        fprintf(stderr, "close_race: %s\n", err);
        return 1;
    }
    s.x = malloc(N * sizeof *s.x);
    s.t = malloc(N * sizeof *s.t);
    for (int i = 0; i < N; i++) {
        s.x[i] = (float)((i % 97) - 48) / 8.0f;
        s.t[i] = (float)(i % 3 == 0);
    }
    int64_t shape[1] = {N};
    lk_named_tensor named[2] = {
        {"input", {s.x, LK_DTYPE_F32, 1, shape, NULL}, NULL},
        {"target", {s.t, LK_DTYPE_F32, 1, shape, NULL}, NULL},
    };
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = named;
    args.n_tensors = 2;
    if (lk_loss_eval(s.loss, &args, &s.want) != LK_OK) {
        fprintf(stderr, "close_race: %s\n", args.errmsg);
        return 1;
    }
    atomic_store(&s.left, APP_THREADS);
    pthread_t th[APP_THREADS];
    for (int i = 0; i < APP_THREADS; i++)
        pthread_create(&th[i], NULL, worker, &s);
    while (atomic_load(&s.started) < APP_THREADS)
        ;
    lk_runtime_close(rt); /* while the threads evaluate */
    for (int i = 0; i < APP_THREADS; i++)
        pthread_join(th[i], NULL);
    free(s.x);
    free(s.t);
    int bad = atomic_load(&s.bad);
    printf("close_race: %d threads x %d evaluations, %d bad\n", APP_THREADS, s.rounds, bad);
    return bad != 0;
}
