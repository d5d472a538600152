/* ntxent: SimCLR's NT-Xent (normalised temperature-scaled cross-entropy) on
 * a (2N, D) batch of embeddings whose rows i and i + N are the two views of
 * one example. Each of the 2N anchors is classified among the 2N - 1 other
 * rows by cosine similarity over a temperature, its other view being the
 * class; the value is the mean over the anchors. The engine is
 * contrastive.h's, with row i in class i mod N. */
#include "contrastive.h"

CTR_KERNELS(ntxent)

#if defined(LK_PRIMARY)

static const lk_slot_desc ntxent_input = {
    .name = "input",
    .doc = "(2N, D) embeddings; rows i and i + N are the two views of example i",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .ndims = LK_NDIM_BIT(2),
    .batch = LK_BATCH_DIM(0),
    .batch_views = 2, /* rows i and i + N: two views of sample i */
};
static const lk_slot_desc *const ntxent_slots[] = {&ntxent_input, NULL};

static lk_status ntxent_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    return ctr_create(ntxent__variants, a, inst, msg);
}

static lk_status ntxent_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                             lk_plan *plan, lk_msg *msg)
{
    (void)inst, (void)reduction;
    const lk_tensor *x = &slots[0];
    lk_status st = ctr_plan_matrix(x, plan, msg);
    if (st != LK_OK)
        return st;
    if (x->shape[0] % 2 != 0)
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: %lld row%s; NT-Xent needs an even count 2N (rows i and i + N "
                       "are the two views of one example)",
                       (long long)x->shape[0], x->shape[0] == 1 ? "" : "s");
    return LK_OK;
}

/* Row i's positive is row i + N (or i - N): class i mod N. */
static lk_status ntxent_classes(const lk_tensor *slots, int64_t m, double *cls, lk_msg *msg)
{
    (void)slots, (void)msg;
    for (int64_t i = 0; i < m; i++)
        cls[i] = (double)(i < m / 2 ? i : i - m / 2);
    return LK_OK;
}

/* Zero rows: the mean over no anchor is 0 (docs/design.md), where torch's
 * mean of nothing is NaN. */
static lk_status ntxent_whole(const void *inst, const lk_plan *plan, const lk_whole_args *args,
                              double *value, lk_msg *msg)
{
    (void)plan;
    return ctr_whole(inst, args, ntxent_classes, 0.0, value, msg);
}

const lk_loss_desc ntxent_desc = {
    .id = "ntxent",
    .summary = "SimCLR's NT-Xent: cross-entropy of each row against its other view among all "
               "rows, by cosine similarity / temperature, on a (2N, D) batch",
    .version = "1.0.0",
    .params = ctr_params,
    .slots = ntxent_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_WHOLE,
    .create = ntxent_create,
    .destroy = ctr_destroy,
    .plan = ntxent_plan,
    .whole = ntxent_whole,
};

#endif
