/* gather_loss.c: a whole-batch loss (ntxent, supcon, lovasz) over a batch
 * sharded across MPI ranks, exact.
 *
 * A whole-batch loss has no statistics that add across ranks: every rank
 * gathers the batch and evaluates all of it. Where each tensor's samples
 * lie comes from the loss (lk_loss_batch_at): the batch dim, and how many
 * views of each sample lie along it (ntxent's (2N, D) input holds rows i
 * and i + N of sample i). Rank r holds samples [N r / P, N (r + 1) / P) of
 * every view, as a data loader would hand them out; MPI_Allgatherv brings
 * every rank's shard to every rank, which puts them together view by view
 * in rank order, evaluates the gathered batch and keeps the gradient of its
 * own samples. Rank 0 prints the value and writes the gradient of the
 * input, put back together from the ranks, to OUT.npy.
 *
 * usage: gather_loss CONFIG OUT.npy [rows|pixels]
 * The config's loss takes "input" and, when it has one, an int64 "target":
 * rows, (views N, 16) embeddings and one label per sample (ntxent,
 * supcon); pixels, (N, 3, 4, 4) logits and (N, 4, 4) class ids
 * (lovasz_softmax). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <losskit/losskit.h>

enum { N = 7, D = 16, CLASSES = 3 };

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
    fprintf(stderr, "gather_loss: %s: %s\n", what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

/* One tensor of the call: the whole batch's (as one process would hold
 * it), this rank's shard, and the gathered batch. */
typedef struct tens {
    const char *name;
    int32_t dtype, ndim, dim;
    uint32_t views;
    int64_t shape[4], shard_shape[4];
    char *whole, *shard, *gathered;
    size_t esize;
    int64_t outer, inner; /* elements before and after the batch dim */
} tens;

/* Copies samples [a, b) of every view along the batch dim of src (n
 * samples a view) to dst, which holds m samples a view from sample at. */
static void copy_samples(const tens *t, const char *src, int64_t n, int64_t a, int64_t b, char *dst,
                         int64_t m, int64_t at)
{
    size_t row = (size_t)t->inner * t->esize;
    for (int64_t o = 0; o < t->outer; o++)
        for (uint32_t v = 0; v < t->views; v++)
            memcpy(dst + ((o * t->views + v) * m + at) * row,
                   src + ((o * t->views + v) * n + a) * row, (size_t)(b - a) * row);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3)
        return fail("usage", "gather_loss CONFIG OUT.npy [rows|pixels]");
    int pixels = argc > 3 && strcmp(argv[3], "pixels") == 0;

    lk_runtime *rt;
    lk_loss *loss;
    char err[LK_ERRMSG_CAP];
    if (lk_runtime_open(NULL, &rt, err) != LK_OK)
        return fail("runtime", err);
    if (lk_loss_from_file(rt, argv[1], &loss, err) != LK_OK)
        return fail(argv[1], err);
    if (!lk_loss_takes_whole_batch(loss))
        return fail(argv[1], "not a whole-batch loss: split it through statistics (split_loss)");

    /* the tensors: input, and target when the loss has one */
    tens ts[2];
    int n_t = 0;
    for (size_t i = 0; i < lk_loss_slot_count(loss) && n_t < 2; i++) {
        const lk_slot_desc *sd;
        int32_t required, padded;
        lk_loss_slot_at(loss, i, &sd, &required, NULL);
        if (!required)
            continue;
        tens *t = &ts[n_t++];
        memset(t, 0, sizeof *t);
        t->name = sd->name;
        if (lk_loss_batch_at(loss, i, &t->dim, &t->views, &padded, err) != LK_OK)
            return fail(argv[1], err);
        if (padded)
            return fail(t->name, "a padded slot: this example gathers shards of one shape");
        int input = strcmp(t->name, "input") == 0;
        t->dtype = input ? LK_DTYPE_F64 : LK_DTYPE_I64;
        t->esize = lk_dtype_size(t->dtype);
        if (input && pixels)
            t->ndim = 4, t->shape[0] = N, t->shape[1] = CLASSES, t->shape[2] = t->shape[3] = 4;
        else if (input)
            t->ndim = 2, t->shape[0] = N * t->views, t->shape[1] = D;
        else if (pixels)
            t->ndim = 3, t->shape[0] = N, t->shape[1] = t->shape[2] = 4;
        else
            t->ndim = 1, t->shape[0] = N;
        if (t->dim != 0 || t->shape[0] != N * (int64_t)t->views)
            return fail(t->name, "this example holds its samples in dim 0");
    }
    if (n_t == 0 || strcmp(ts[0].name, "input") != 0)
        return fail(argv[1], "the loss's first tensor is not 'input'");

    /* the whole batch, as every rank's loader would see it, and this
     * rank's samples of it */
    int64_t r0 = N * rank / size, r1 = N * (rank + 1) / size;
    for (int k = 0; k < n_t; k++) {
        tens *t = &ts[k];
        int64_t count;
        t->outer = 1;
        t->inner = 1;
        for (int32_t d = 1; d < t->ndim; d++)
            t->inner *= t->shape[d];
        count = t->shape[0] * t->inner;
        t->whole = malloc((size_t)count * t->esize);
        t->gathered = malloc((size_t)count * t->esize);
        t->shard = malloc((size_t)((r1 - r0) * t->views * t->inner + 1) * t->esize);
        for (int64_t i = 0; i < count; i++) {
            if (t->dtype == LK_DTYPE_F64)
                ((double *)t->whole)[i] = 2 * uniform() - 1;
            else
                ((int64_t *)t->whole)[i] = (int64_t)(uniform() * CLASSES);
        }
        memcpy(t->shard_shape, t->shape, sizeof t->shape);
        t->shard_shape[0] = (r1 - r0) * t->views;
        copy_samples(t, t->whole, N, r0, r1, t->shard, r1 - r0, 0);
    }

    /* gather: every rank's shard to every rank, then view by view in rank
     * order */
    int *counts = malloc(size * sizeof *counts), *displs = malloc(size * sizeof *displs);
    for (int k = 0; k < n_t; k++) {
        tens *t = &ts[k];
        size_t unit = (size_t)t->views * t->inner * t->esize; /* one sample, all views */
        char *recv = malloc((size_t)N * unit);
        for (int p = 0; p < size; p++) {
            counts[p] = (int)((N * (p + 1) / size - N * p / size) * unit);
            displs[p] = (int)(N * p / size * unit);
        }
        MPI_Allgatherv(t->shard, counts[rank], MPI_BYTE, recv, counts, displs, MPI_BYTE,
                       MPI_COMM_WORLD);
        for (int p = 0; p < size; p++) {
            int64_t a = N * p / size, b = N * (p + 1) / size;
            copy_samples(t, recv + displs[p], b - a, 0, b - a, t->gathered, N, a);
        }
        free(recv);
    }

    /* every rank evaluates the gathered batch */
    lk_named_tensor in[2];
    for (int k = 0; k < n_t; k++)
        in[k] = (lk_named_tensor){
            ts[k].name, {ts[k].gathered, ts[k].dtype, ts[k].ndim, ts[k].shape, NULL}, NULL};
    tens *x = &ts[0];
    int64_t xcount = x->shape[0] * x->inner;
    double *g = malloc((size_t)xcount * sizeof *g);
    lk_named_tensor grads[1] = {{"input", {g, LK_DTYPE_F64, x->ndim, x->shape, NULL}, NULL}};
    lk_eval_args a;
    lk_eval_args_init(&a);
    a.tensors = in;
    a.n_tensors = (size_t)n_t;
    a.grads = grads;
    a.n_grads = 1;
    double value;
    if (lk_loss_eval(loss, &a, &value) != LK_OK)
        return fail("lk_loss_eval", a.errmsg);

    /* this rank keeps its own samples' gradient; rank 0 puts the ranks'
     * back together (disjoint rows: a sum of the ranks' zero-padded
     * gradients is exact) to compare with one process */
    double *mine = calloc((size_t)xcount, sizeof *mine), *all = calloc((size_t)xcount, sizeof *all);
    double *own = malloc((size_t)((r1 - r0) * x->views * x->inner + 1) * sizeof *own);
    copy_samples(x, (const char *)g, N, r0, r1, (char *)own, r1 - r0, 0);
    copy_samples(x, (const char *)own, r1 - r0, 0, r1 - r0, (char *)mine, N, r0);
    MPI_Reduce(mine, all, (int)xcount, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        lk_tensor t = {all, LK_DTYPE_F64, x->ndim, x->shape, NULL};
        if (lk_npy_write(argv[2], &t, err) != LK_OK)
            return fail(argv[2], err);
        printf("%s on %d rank(s): %.17g\n", lk_loss_name(loss), size, value);
    }
    for (int k = 0; k < n_t; k++)
        free(ts[k].whole), free(ts[k].shard), free(ts[k].gathered);
    free(counts), free(displs), free(g), free(mine), free(all), free(own);
    lk_loss_free(loss);
    lk_runtime_close(rt);
    MPI_Finalize();
    return 0;
}
