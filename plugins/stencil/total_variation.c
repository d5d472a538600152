/* total_variation: kornia's total_variation per sample, the sum of
 * |forward differences| along the last two dimensions of (N, ..., H, W),
 * summed over everything but dim 0; d|d|/dd = sign(d), 0 at d = 0. On the
 * edge driver (losskit/stencil.h) with no node term, on its residual path
 * (r = x: |d| and sign(d) are 0 at d = 0, as LK_STEN_RESIDUAL requires). */
#include "losskit/stencil.h"

static const lk_slot_desc tv_input = {.name = "input",
                                      .doc = "images (N, ..., H, W)",
                                      .dtypes = LK_DTYPES_FLOAT,
                                      .flags = LK_SLOT_DIFFERENTIABLE,
                                      .shape = LK_SHAPE_ANY,
                                      .values = LK_VALUES_REAL,
                                      .ndims = LK_NDIM_FROM(3)};
static const lk_slot_desc *const tv_slots[] LK__UNUSED = {&tv_input, NULL};

#define TV_FLAGS (LK_STEN_PER_SAMPLE | LK_STEN_FINITE | LK_STEN_RESIDUAL)

static lk_status tv_plan(const void *inst, const lk_tensor *slots, int32_t reduction, lk_plan *plan,
                         lk_msg *msg)
{
    (void)inst;
    if (slots[0].ndim < 3) {
        char sh[192];
        lk_shape_str(sh, sizeof sh, slots[0].ndim, slots[0].shape);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s; total_variation takes images (N, ..., H, W), rank 3 or "
                       "more",
                       sh);
    }
    lk_edges_plan(&slots[0], 2, TV_FLAGS, reduction, plan);
    return LK_OK;
}

LK_AI void tv_node(const lk_none *n, lk_elem *e)
{
    (void)n;
    e->loss = lk_zero();
    e->grad = lk_zero();
}

LK_AI void tv_edge(const lk_none *n, lk_edge *e)
{
    (void)n;
    e->loss = lk_abs(e->d);
    e->grad = lk_sign(e->d);
}

LK_EDGE_LOSS(total_variation, lk_none, tv_node, tv_edge, NULL, TV_FLAGS, LK_HOOKS(.plan = tv_plan),
             .summary = "total variation per sample (kornia): the sum of |forward differences| "
                        "along the last two dimensions",
             .slots = tv_slots, .reductions = LK_REDUCTIONS_ELEMENTWISE)
