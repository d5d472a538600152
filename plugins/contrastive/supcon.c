/* supcon: the supervised contrastive loss of Khosla et al. (NeurIPS 2020),
 * the L_out form (the mean over positives outside the log), on (N, D)
 * embeddings with integer labels: every row with the same label as anchor i
 * is a positive of i, the denominator runs over all rows but i, and the
 * value is the mean over the anchors that have at least one positive. No
 * base-temperature factor (the authors' code multiplies by tau /
 * base_temperature, 1 at their defaults). The engine is contrastive.h's. */
#include "contrastive.h"

CTR_KERNELS(supcon)

#if defined(LK_PRIMARY)

static const lk_slot_desc supcon_input = {
    .name = "input",
    .doc = "(N, D) embeddings, L2-normalised inside the loss",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
    .ndims = LK_NDIM_BIT(2),
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc supcon_target = {
    .name = "target",
    .doc = "(N,) integer labels, any values; rows with equal labels are positives",
    .dtypes = LK_DTYPES_INT,
    .flags = 0,
    .shape = LK_SHAPE_INPUT_NO_CHANNEL,
    .values = LK_VALUES_CLASS,
    .batch = LK_BATCH_DIM(0),
};
static const lk_slot_desc *const supcon_slots[] = {&supcon_input, &supcon_target, NULL};

static lk_status supcon_create(const lk_create_args *a, void **inst, lk_msg *msg)
{
    return ctr_create(supcon__variants, a, inst, msg);
}

static lk_status supcon_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                             lk_plan *plan, lk_msg *msg)
{
    (void)inst, (void)reduction;
    lk_status st = ctr_plan_matrix(&slots[0], plan, msg);
    if (st == LK_OK && !lk__c_order(&slots[1]))
        return lk_fail(msg, LK_ERR_UNSUPPORTED, "target is strided; this loss needs C order");
    return st;
}

static int64_t supcon_label(const lk_tensor *t, int64_t i)
{
    return t->dtype == LK_DTYPE_I32 ? (int64_t)((const int32_t *)t->data)[i]
                                    : ((const int64_t *)t->data)[i];
}

typedef struct supcon_key {
    int64_t label, row;
} supcon_key;

static int supcon_cmp(const void *a, const void *b)
{
    const supcon_key *p = a, *q = b;
    if (p->label != q->label)
        return p->label < q->label ? -1 : 1;
    return p->row < q->row ? -1 : p->row > q->row;
}

/* Dense class ids in [0, m), by label order: equal labels, equal ids. */
static lk_status supcon_classes(const lk_tensor *slots, int64_t m, double *cls, lk_msg *msg)
{
    if (m == 0)
        return LK_OK;
    supcon_key *k = malloc((size_t)m * sizeof *k);
    if (!k)
        return lk_fail(msg, LK_ERR_NOMEM, "out of memory for %lld labels", (long long)m);
    for (int64_t i = 0; i < m; i++)
        k[i] = (supcon_key){supcon_label(&slots[1], i), i};
    qsort(k, (size_t)m, sizeof *k, supcon_cmp);
    int64_t id = 0;
    for (int64_t i = 0; i < m; i++) {
        if (i > 0 && k[i].label != k[i - 1].label)
            id++;
        cls[k[i].row] = (double)id;
    }
    free(k);
    return LK_OK;
}

/* No anchor with a positive (all labels distinct, or N = 0): value 0 and a
 * zero gradient; see docs/losses/contrastive.md. */
static lk_status supcon_whole(const void *inst, const lk_plan *plan, const lk_whole_args *args,
                              double *value, lk_msg *msg)
{
    (void)plan;
    return ctr_whole(inst, args, supcon_classes, 0.0, value, msg);
}

const lk_loss_desc supcon_desc = {
    .id = "supcon",
    .summary = "supervised contrastive loss (Khosla et al. 2020, L_out): rows with equal labels "
               "attract, all others repel, by cosine similarity / temperature",
    .version = "1.0.0",
    .params = ctr_params,
    .slots = supcon_slots,
    .reductions = LK_REDUCTION_BIT(LK_REDUCTION_MEAN),
    .default_reduction = LK_REDUCTION_MEAN,
    .flags = LK_LOSS_WHOLE,
    .create = supcon_create,
    .destroy = ctr_destroy,
    .plan = supcon_plan,
    .whole = supcon_whole,
};

#endif
