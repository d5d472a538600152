/* test_split.c: split evaluation (lk_loss_stats_count, lk_loss_stats,
 * lk_loss_finish). A batch cut along dim 0 into 2 and 3 shards, whose
 * statistics are summed as an all-reduce would, gives the value and the
 * gradients of one evaluation on the whole batch to 1e-12 relative in
 * float64 (the value; each gradient element relative to the gradient's
 * largest): region losses (dice binary and multiclass, iou),
 * cross_entropy (with class weights and ignore_index: the divisor is a
 * statistic), a weighted terms config, FUSED elementwise losses with mean,
 * sum and batchmean.
 * Region losses with per-sample statistics go through their partials,
 * exactly too; a loss with per-sample statistics and no partials, a
 * whole-batch loss and reduction none are refused with one line. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/losskit.h"
#include "test_golden_io.h"

static lk_runtime *rt;

static void setup(void)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    opts.threads = 2;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
}

static void teardown(void)
{
    lk_runtime_close(rt);
}

TestSuite(split, .init = setup, .fini = teardown);

static lk_loss *load(const char *json)
{
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), "test", &loss, err), LK_OK, "%s", err);
    return loss;
}

static lk_loss *load_file(const char *rel)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", LK_SOURCE_ROOT, rel);
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, err), LK_OK, "%s", err);
    return loss;
}

static uint64_t rng = 88172645463325252ull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

enum target_kind { T_UNIT, T_REAL, T_CLASS };

/* One case: the input's shape, the target's kind. Class targets are int64
 * shaped like the input without dim 1, with ignore_index -100 here and
 * there; ignore marks how often. */
typedef struct split_case {
    int32_t ndim;
    int64_t shape[4];
    int kind;
    int ignore;
} split_case;

static int64_t prod(const int64_t *s, int32_t from, int32_t to)
{
    int64_t n = 1;
    for (int32_t d = from; d < to; d++)
        n *= s[d];
    return n;
}

static void split_near(double got, double want, double scale, const char *what, size_t i)
{
    double tol = 1e-12 * fmax(fabs(want), scale);
    cr_assert(fabs(got - want) <= tol || (isnan(got) && isnan(want)),
              "%s[%zu]: split %.17g, one-shot %.17g", what, i, got, want);
}

/* The input, target and gradient of rows [r0, r1) of the batch. */
static void shard_tensors(const split_case *c, double *x, void *t, double *g, int64_t r0,
                          int64_t r1, int64_t *xshape, int64_t *tshape, lk_named_tensor *nt,
                          lk_named_tensor *ng)
{
    int64_t row = prod(c->shape, 1, c->ndim);
    memcpy(xshape, c->shape, sizeof c->shape);
    xshape[0] = r1 - r0;
    nt[0] = (lk_named_tensor){"input", {x + r0 * row, LK_DTYPE_F64, c->ndim, xshape, NULL}, NULL};
    if (c->kind == T_CLASS) {
        int64_t trow = prod(c->shape, 2, c->ndim);
        tshape[0] = r1 - r0;
        for (int32_t d = 2; d < c->ndim; d++)
            tshape[d - 1] = c->shape[d];
        nt[1] = (lk_named_tensor){
            "target", {(int64_t *)t + r0 * trow, LK_DTYPE_I64, c->ndim - 1, tshape, NULL}, NULL};
    } else {
        nt[1] = (lk_named_tensor){
            "target", {(double *)t + r0 * row, LK_DTYPE_F64, c->ndim, xshape, NULL}, NULL};
    }
    ng[0] = (lk_named_tensor){"input", {g + r0 * row, LK_DTYPE_F64, c->ndim, xshape, NULL}, NULL};
}

static void check_split(lk_loss *loss, const split_case *c, int n_shards)
{
    int64_t n = prod(c->shape, 0, c->ndim), N = c->shape[0];
    int64_t nt_elems = c->kind == T_CLASS ? n / c->shape[1] : n;
    int64_t C = c->ndim > 1 ? c->shape[1] : 1;
    double *x = malloc((size_t)n * sizeof *x), *g1 = malloc((size_t)n * sizeof *g1),
           *g2 = malloc((size_t)n * sizeof *g2);
    void *t = malloc((size_t)nt_elems * 8);
    cr_assert(x && g1 && g2 && t);
    for (int64_t i = 0; i < n; i++)
        x[i] = 4.0 * uniform() - 2.0;
    for (int64_t i = 0; i < nt_elems; i++) {
        if (c->kind == T_CLASS)
            ((int64_t *)t)[i] =
                c->ignore && uniform() < 0.1 ? -100 : (int64_t)(uniform() * (double)C);
        else if (c->kind == T_UNIT)
            ((double *)t)[i] = c->ignore && uniform() < 0.1 ? -100.0
                               : uniform() < 0.5            ? uniform()
                                                            : (double)(uniform() < 0.5);
        else
            ((double *)t)[i] = 3.0 * uniform() - 1.5;
    }

    /* one shot */
    int64_t xs[4], ts[4];
    lk_named_tensor tens[2], grad[1];
    shard_tensors(c, x, t, g1, 0, N, xs, ts, tens, grad);
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = tens;
    args.n_tensors = 2;
    args.grads = grad;
    args.n_grads = 1;
    double want = NAN;
    cr_assert_eq(lk_loss_eval(loss, &args, &want), LK_OK, "%s", args.errmsg);

    /* shards: statistics, their sum, finish */
    size_t count = 0, first_count = 0;
    double *sum = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (int s = 0; s < n_shards; s++) {
            int64_t r0 = N * s / n_shards, r1 = N * (s + 1) / n_shards;
            shard_tensors(c, x, t, g2, r0, r1, xs, ts, tens, grad);
            lk_eval_args_init(&args);
            args.tensors = tens;
            args.n_tensors = 2;
            args.grads = grad;
            args.n_grads = 1;
            if (pass == 0) {
                cr_assert_eq(lk_loss_stats_count(loss, &args, &count), LK_OK, "%s", args.errmsg);
                if (s == 0) {
                    first_count = count;
                    sum = calloc(count, sizeof *sum);
                    cr_assert(sum);
                }
                cr_assert_eq(count, first_count, "every shard has as many statistics");
                double *mine = calloc(count, sizeof *mine);
                cr_assert_eq(lk_loss_stats(loss, &args, mine, count), LK_OK, "%s", args.errmsg);
                for (size_t k = 0; k < count; k++)
                    sum[k] += mine[k];
                free(mine);
            } else {
                double got = NAN;
                cr_assert_eq(lk_loss_finish(loss, &args, sum, count, &got), LK_OK, "%s",
                             args.errmsg);
                split_near(got, want, fabs(want), "value", (size_t)s);
            }
        }
    }
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(g1[i]));
    cr_assert(scale > 0.0, "the gradient is not all zero");
    for (int64_t i = 0; i < n; i++)
        split_near(g2[i], g1[i], scale, "grad", (size_t)i);

    /* a wrong count is refused, and a value-only finish needs no gradient */
    shard_tensors(c, x, t, g2, 0, N, xs, ts, tens, grad);
    lk_eval_args_init(&args);
    args.tensors = tens;
    args.n_tensors = 2;
    double v = 0;
    cr_assert_eq(lk_loss_finish(loss, &args, sum, count - 1, &v), LK_ERR_INVALID);
    cr_assert(strstr(args.errmsg, "statistics given"), "%s", args.errmsg);
    cr_assert_eq(lk_loss_finish(loss, &args, sum, count, &v), LK_OK, "%s", args.errmsg);
    split_near(v, want, fabs(want), "value-only", 0);
    free(sum);
    free(x);
    free(g1);
    free(g2);
    free(t);
}

static void both(lk_loss *loss, const split_case *c)
{
    check_split(loss, c, 2);
    check_split(loss, c, 3);
    lk_loss_free(loss);
}

static const split_case image = {4, {7, 1, 48, 50}, T_UNIT, 0};
static const split_case image_ignored = {4, {7, 1, 48, 50}, T_UNIT, 1};
static const split_case classes = {4, {7, 4, 30, 40}, T_CLASS, 0};
static const split_case classes_ignored = {4, {7, 4, 30, 40}, T_CLASS, 1};
static const split_case real = {3, {7, 5, 1000}, T_REAL, 0};
static const split_case classes_unit = {4, {7, 4, 30, 40}, T_UNIT, 0};

Test(split, dice_binary)
{
    both(load_file("configs/dice.json"), &image);
}

Test(split, dice_multiclass)
{
    both(load_file("configs/dice_multiclass.json"), &classes);
    both(
        load(
            "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": -100}}"),
        &classes_ignored);
}

Test(split, iou)
{
    both(load_file("configs/iou.json"), &image);
}

Test(split, cross_entropy)
{
    both(load_file("configs/cross_entropy.json"), &classes);
    /* class weights and ignored positions: mean divides by a statistic */
    both(load("{\"loss\": \"cross_entropy\", \"params\": {\"weight\": [0.5, 2, 1, 0.25], "
              "\"label_smoothing\": 0.1}, \"reduction\": \"mean\"}"),
         &classes_ignored);
}

Test(split, weighted_terms)
{
    both(load_file("configs/dice_bce_terms.json"), &image);
    both(load("{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.3}, {\"loss\": "
              "\"dice\", \"weight\": 0.7}, {\"loss\": \"focal\", \"weight\": 2}], "
              "\"reduction\": \"mean\"}"),
         &image);
}

Test(split, elementwise_mean_sum_batchmean)
{
    both(load_file("configs/mse.json"), &real);
    both(load("{\"loss\": \"mse\", \"reduction\": \"sum\"}"), &real);
    both(load("{\"loss\": \"huber\", \"reduction\": \"mean\"}"), &real);
    both(load("{\"loss\": \"focal\", \"reduction\": \"mean\"}"), &image);
    both(load("{\"loss\": \"kl_div\", \"reduction\": \"batchmean\"}"), &image);
}

Test(split, whole_batch_loss_refused)
{
    lk_loss *loss = load_file("configs/ntxent.json");
    double x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t shape[2] = {4, 2};
    lk_named_tensor tens[1] = {{"input", {x, LK_DTYPE_F64, 2, shape, NULL}, NULL}};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = tens;
    args.n_tensors = 1;
    size_t count = 7;
    cr_assert_eq(lk_loss_stats_count(loss, &args, &count), LK_ERR_UNSUPPORTED);
    cr_assert_eq(count, 0);
    cr_assert(strstr(args.errmsg, "loss 'ntxent' takes the whole batch at once"), "%s",
              args.errmsg);
    cr_assert(strstr(args.errmsg, "cannot be summed across processes"), "%s", args.errmsg);
    cr_assert_null(strchr(args.errmsg, '\n'));
    double st[8], v = 0;
    cr_assert_eq(lk_loss_stats(loss, &args, st, 8), LK_ERR_UNSUPPORTED);
    cr_assert_eq(lk_loss_finish(loss, &args, st, 8, &v), LK_ERR_UNSUPPORTED);
    cr_assert(isnan(v));
    lk_loss_free(loss);

    loss = load("{\"loss\": \"mse\", \"reduction\": \"none\"}");
    double t[8] = {0};
    lk_named_tensor two[2] = {{"input", {x, LK_DTYPE_F64, 2, shape, NULL}, NULL},
                              {"target", {t, LK_DTYPE_F64, 2, shape, NULL}, NULL}};
    args.tensors = two;
    args.n_tensors = 2;
    cr_assert_eq(lk_loss_stats_count(loss, &args, &count), LK_ERR_UNSUPPORTED);
    cr_assert(strstr(args.errmsg, "reduction 'none' has no statistics"), "%s", args.errmsg);
    lk_loss_free(loss);
}

/* How each tensor of a loss is gathered across processes (ABI 1.6): the
 * whole-batch losses' declared layouts, a loss split through statistics
 * (dim 0, one run), and two terms that read one tensor with different
 * layouts, which no gather can serve. */
static void expect_batch(lk_loss *loss, size_t i, const char *name, int32_t dim, uint32_t views,
                         int32_t padded)
{
    const lk_slot_desc *sd = NULL;
    cr_assert_eq(lk_loss_slot_at(loss, i, &sd, NULL, NULL), LK_OK);
    cr_assert_str_eq(sd->name, name);
    int32_t d = -2, p = -2;
    uint32_t v = 0;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_batch_at(loss, i, &d, &v, &p, err), LK_OK, "%s: %s", name, err);
    cr_expect_eq(d, dim, "%s: dim %d", name, d);
    cr_expect_eq(v, views, "%s: views %u", name, v);
    cr_expect_eq(p, padded, "%s: padded %d", name, p);
}

Test(split, batch_layouts)
{
    lk_loss *loss = load_file("configs/ntxent.json");
    cr_expect_eq(lk_loss_takes_whole_batch(loss), 1);
    expect_batch(loss, 0, "input", 0, 2, 0);
    lk_loss_free(loss);

    loss = load("{\"loss\": \"ctc\"}");
    cr_expect_eq(lk_loss_takes_whole_batch(loss), 1);
    expect_batch(loss, 0, "input", 1, 1, 1);
    expect_batch(loss, 1, "target", 0, 1, 1);
    expect_batch(loss, 2, "input_lengths", 0, 1, 0);
    expect_batch(loss, 3, "target_lengths", 0, 1, 0);
    lk_loss_free(loss);

    loss = load("{\"terms\": [{\"loss\": \"supcon\"}, {\"loss\": \"lovasz_softmax\", "
                "\"tensors\": {\"input\": \"masks\", \"target\": \"labels\"}}]}");
    cr_expect_eq(lk_loss_takes_whole_batch(loss), 1);
    for (size_t i = 0; i < 4; i++)
        cr_expect_eq(lk_loss_batch_at(loss, i, NULL, NULL, NULL, NULL), LK_OK);
    lk_loss_free(loss);

    loss = load("{\"loss\": \"dice\"}");
    cr_expect_eq(lk_loss_takes_whole_batch(loss), 0);
    expect_batch(loss, 0, "input", 0, 1, 0);
    expect_batch(loss, 1, "target", 0, 1, 0);
    char err[LK_ERRMSG_CAP] = "";
    cr_expect_eq(lk_loss_batch_at(loss, 2, NULL, NULL, NULL, err), LK_ERR_NOT_FOUND);
    cr_expect(strstr(err, "loss 'dice' has no tensor 2"), "%s", err);
    lk_loss_free(loss);

    /* ntxent's pairs are N rows apart; mse's batch is one run */
    loss = load("{\"terms\": [{\"loss\": \"ntxent\"}, {\"loss\": \"mse\"}]}");
    cr_expect_eq(lk_loss_batch_at(loss, 0, NULL, NULL, NULL, err), LK_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "tensor 'input': term 1 ('ntxent') gathers it along dim 0 in 2 views, "
                          "term 2 ('mse') along dim 0 in 1 view"),
              "%s", err);
    cr_expect_null(strchr(err, '\n'));
    lk_loss_free(loss);
}

/* Region losses with per-sample statistics (dice per_sample,
 * generalized_dice's default, the MONAI-style configs): their statistics
 * hold one block per sample, so summing them across processes would add
 * sample i of one shard to sample i of another. The host splits them
 * through the loss's partials (the two sums the value is formed from),
 * exactly, with shards of unequal sizes (7 samples as 3 + 4 and 2 + 2 + 3):
 * a mean over (sample, class) pairs, tversky's power of that mean, an
 * empty rule that leaves pairs out of it (tiny has empty classes), and a
 * weighted sum with a term split the usual way. */
static const split_case tiny = {4, {7, 4, 2, 3}, T_CLASS, 0};
static const split_case tiny_unit = {4, {7, 3, 2, 3}, T_UNIT, 0};

Test(split, per_sample_statistics)
{
    both(load("{\"loss\": \"dice\", \"params\": {\"per_sample\": true}}"), &image);
    both(load("{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"per_sample\": "
              "true, \"empty\": \"skip\"}}"),
         &tiny);
    both(load("{\"loss\": \"iou\", \"params\": {\"mode\": \"multiclass\", \"per_sample\": "
              "true, \"empty\": \"zero\", \"class_weights\": [1, 2, 0.5, 1]}}"),
         &tiny);
    both(load("{\"loss\": \"tversky\", \"params\": {\"mode\": \"multilabel\", \"per_sample\": "
              "true, \"alpha\": 0.3, \"beta\": 0.7, \"gamma\": 1.5}}"),
         &tiny_unit);
    both(load("{\"loss\": \"focal_tversky\", \"params\": {\"mode\": \"multiclass\", "
              "\"per_sample\": true}}"),
         &classes);
    both(load("{\"loss\": \"mcc\", \"params\": {\"per_sample\": true}}"), &image);
    both(load("{\"loss\": \"generalized_dice\", \"params\": {\"mode\": \"multiclass\"}}"), &tiny);
    both(load_file("configs/monai_generalized_dice_focal.json"), &classes_unit);
    /* one literal a config: clang warns of literals joined in an array */
    both(load("{\"terms\": [{\"loss\": \"mse\", \"weight\": 0.5}, {\"loss\": \"iou\", "
              "\"weight\": 2, \"params\": {\"per_sample\": true}}]}"),
         &image);
}

/* The host's side of it on a raw-ABI loss (tests/fixtures/split): the
 * mean and the sum over samples of each sample's squared sum, split
 * through partials; the same loss without partials is refused, naming the
 * term, and lk_loss_eval is unaffected. */
static lk_runtime *fixture_runtime(void)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.plugin_path = LK_SPLIT_FIXTURE_DIR;
    opts.threads = 2;
    lk_runtime *r = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &r, err), LK_OK, "lk_runtime_open: %s", err);
    return r;
}

static lk_loss *load_in(lk_runtime *r, const char *json)
{
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(r, json, strlen(json), "test", &loss, err), LK_OK, "%s", err);
    return loss;
}

Test(split, partials_of_a_plugin)
{
    lk_runtime *r = fixture_runtime();
    both(load_in(r, "{\"loss\": \"fx_sample_square\"}"), &real);
    both(load_in(r, "{\"loss\": \"fx_sample_square\", \"reduction\": \"sum\"}"), &image);

    static const char *const configs[] = {
        "{\"loss\": \"fx_sample_square_unsplit\"}",
        "{\"terms\": [{\"loss\": \"fx_sample_square\"}, {\"loss\": "
        "\"fx_sample_square_unsplit\"}]}",
    };
    static const char *const wants[] = {
        "loss 'fx_sample_square_unsplit' keeps its statistics per sample and has no partials()",
        "loss 'fx_sample_square_unsplit' ($.terms[1]) keeps its statistics per sample"};
    double x[8] = {-1, 2, -3, 4, 0.5, -0.6, 0.7, -0.8}, t[8] = {0}, g[8];
    int64_t shape[3] = {2, 1, 4};
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        lk_loss *loss = load_in(r, configs[k]);
        lk_named_tensor two[2] = {{"input", {x, LK_DTYPE_F64, 3, shape, NULL}, NULL},
                                  {"target", {t, LK_DTYPE_F64, 3, shape, NULL}, NULL}};
        lk_named_tensor gr[1] = {{"input", {g, LK_DTYPE_F64, 3, shape, NULL}, NULL}};
        lk_eval_args args;
        lk_eval_args_init(&args);
        args.tensors = two;
        args.n_tensors = 2;
        size_t count = 7;
        cr_assert_eq(lk_loss_stats_count(loss, &args, &count), LK_ERR_UNSUPPORTED, "%s",
                     configs[k]);
        cr_assert(strstr(args.errmsg, wants[k]), "%s", args.errmsg);
        cr_assert(strstr(args.errmsg, "would add different samples together"), "%s", args.errmsg);
        double st[64], v = 0;
        cr_assert_eq(lk_loss_stats(loss, &args, st, 64), LK_ERR_UNSUPPORTED);
        args.grads = gr;
        args.n_grads = 1;
        cr_assert_eq(lk_loss_finish(loss, &args, st, 64, &v), LK_ERR_UNSUPPORTED);
        cr_assert(strstr(args.errmsg, wants[k]), "%s", args.errmsg);
        cr_assert_eq(lk_loss_eval(loss, &args, &v), LK_OK, "%s", args.errmsg);
        /* S = (2, -0.2): (4 + 0.04) / 2 per term */
        double want = k == 0 ? 2.02 : 4.04;
        cr_assert(fabs(v - want) < 1e-12, "value %.17g, want %g", v, want);
        cr_assert(fabs(g[0] - (k == 0 ? 2.0 : 4.0)) < 1e-12, "grad[0] %.17g", g[0]);
        lk_loss_free(loss);
    }
    /* partials without the loss's own finalize: refused, saying why */
    lk_loss *loss = load_in(r, "{\"loss\": \"fx_sample_square_nofinalize\"}");
    lk_named_tensor two[2] = {{"input", {x, LK_DTYPE_F64, 3, shape, NULL}, NULL},
                              {"target", {t, LK_DTYPE_F64, 3, shape, NULL}, NULL}};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = two;
    args.n_tensors = 2;
    size_t count = 0;
    cr_assert_eq(lk_loss_stats_count(loss, &args, &count), LK_ERR_UNSUPPORTED);
    cr_assert(strstr(args.errmsg, "has partials(), which the host uses only for a two-pass loss "
                                  "with its own finalize()"),
              "%s", args.errmsg);
    lk_loss_free(loss);

    /* a whole-batch loss of a plugin older than 1.6 declares no batch */
    loss = load_in(r, "{\"loss\": \"fx_whole_sum\"}");
    cr_expect_eq(lk_loss_takes_whole_batch(loss), 1);
    char err[LK_ERRMSG_CAP] = "";
    cr_expect_eq(lk_loss_batch_at(loss, 0, NULL, NULL, NULL, err), LK_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "loss 'fx_whole_sum' (ABI 1.5) declares no batch dim for slot 'input': "
                          "its batch cannot be gathered across processes"),
              "%s", err);
    lk_loss_free(loss);
    lk_runtime_close(r);
}

Test(split, focal_modes_and_bce_options)
{
    both(load("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"alpha\": [0.5, 1, "
              "2, 1]}}"),
         &classes);
    both(load("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": "
              "-100, \"gamma\": 0.5}, \"reduction\": \"sum\"}"),
         &classes_ignored);
    both(load("{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\", \"class_weights\": "
              "[1, 2, 0.5, 3], \"include_background\": false}}"),
         &classes_unit);
    both(load("{\"loss\": \"bce_with_logits\", \"params\": {\"label_smoothing\": 0.1}}"), &image);
}

/* With ignore_index and reduction mean the divisor is the count of the
 * targets not ignored: each shard's plan counts its own and their sum is
 * the whole batch's, so the value and the gradient are exact (focal: an
 * ignored index outside the classes, and one of them; bce_with_logits). */
Test(split, ignore_index_mean)
{
    both(load("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", "
              "\"ignore_index\": -100}}"),
         &classes_ignored);
    both(load("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", "
              "\"ignore_index\": 2, \"alpha\": [0.5, 1, 2, 1]}}"),
         &classes);
    both(load("{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": -100, "
              "\"label_smoothing\": 0.05}}"),
         &image_ignored);
}
