/* split_loss.c: one loss over a batch sharded across MPI ranks, exact.
 *
 * Each rank holds rows [N r / P, N (r + 1) / P) of a batch (here drawn from
 * a fixed seed, as a data loader would hand out shards), computes its
 * statistics with lk_loss_stats, MPI_Allreduce sums them, and
 * lk_loss_finish gives every rank the value of the whole batch and the
 * gradient of that value with respect to its own rows. Rank 0 prints the
 * value and writes the gathered gradient to OUT.npy.
 *
 * usage: split_loss CONFIG OUT.npy [binary|classes] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <losskit/losskit.h>

enum { N = 7, C = 4, H = 24, W = 20 };

static uint64_t rng = 88172645463325252ull;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int fail(const char *what, const char *msg)
{
    fprintf(stderr, "split_loss: %s: %s\n", what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3)
        return fail("usage", "split_loss CONFIG OUT.npy [binary|classes]");
    int classes = argc > 3 && strcmp(argv[3], "classes") == 0;
    int64_t c = classes ? C : 1, row = c * H * W, trow = classes ? H * W : row;

    /* the whole batch, as every rank's loader would see it */
    double *x = malloc(N * row * sizeof *x), *g = malloc(N * row * sizeof *g);
    double *tf = malloc(N * trow * sizeof *tf);
    int64_t *ti = malloc(N * trow * sizeof *ti);
    for (int64_t i = 0; i < N * row; i++)
        x[i] = 4 * uniform() - 2;
    for (int64_t i = 0; i < N * trow; i++) {
        tf[i] = uniform() < 0.4;
        ti[i] = (int64_t)(uniform() * C);
    }

    lk_runtime *rt;
    lk_loss *loss;
    char err[LK_ERRMSG_CAP];
    if (lk_runtime_open(NULL, &rt, err) != LK_OK)
        return fail("runtime", err);
    if (lk_loss_from_file(rt, argv[1], &loss, err) != LK_OK)
        return fail(argv[1], err);

    /* this rank's shard */
    int64_t r0 = N * rank / size, r1 = N * (rank + 1) / size;
    int64_t xs[4] = {r1 - r0, c, H, W}, ts[3] = {r1 - r0, H, W};
    lk_named_tensor in[2] = {
        {"input", {x + r0 * row, LK_DTYPE_F64, 4, xs, NULL}, NULL},
        classes ? (lk_named_tensor){"target", {ti + r0 * trow, LK_DTYPE_I64, 3, ts, NULL}, NULL}
                : (lk_named_tensor){"target", {tf + r0 * trow, LK_DTYPE_F64, 4, xs, NULL}, NULL},
    };
    lk_named_tensor grads[1] = {{"input", {g + r0 * row, LK_DTYPE_F64, 4, xs, NULL}, NULL}};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = 2;
    a.grads = grads;
    a.n_grads = 1;

    size_t n;
    if (lk_loss_stats_count(loss, &a, &n) != LK_OK)
        return fail("lk_loss_stats_count", a.errmsg);
    double *st = malloc(n * sizeof *st);
    if (lk_loss_stats(loss, &a, st, n) != LK_OK)
        return fail("lk_loss_stats", a.errmsg);
    MPI_Allreduce(MPI_IN_PLACE, st, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double value;
    if (lk_loss_finish(loss, &a, st, n, &value) != LK_OK)
        return fail("lk_loss_finish", a.errmsg);

    /* gather the gradient rows on rank 0 */
    int *counts = malloc(size * sizeof *counts), *displs = malloc(size * sizeof *displs);
    for (int p = 0; p < size; p++) {
        displs[p] = (int)(N * p / size * row);
        counts[p] = (int)((N * (p + 1) / size - N * p / size) * row);
    }
    MPI_Gatherv(rank ? g + r0 * row : MPI_IN_PLACE, counts[rank], MPI_DOUBLE, g, counts, displs,
                MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        int64_t full[4] = {N, c, H, W};
        lk_tensor t = {g, LK_DTYPE_F64, 4, full, NULL};
        if (lk_npy_write(argv[2], &t, err) != LK_OK)
            return fail(argv[2], err);
        printf("%s on %d rank(s): %.17g\n", lk_loss_name(loss), size, value);
    }
    free(st), free(counts), free(displs), free(x), free(g), free(tf), free(ti);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    MPI_Finalize();
    return 0;
}
