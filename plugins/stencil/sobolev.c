/* sobolev: mean((x - t)^2) + grad_weight * sum over the last `dims`
 * dimensions d of mean((D_d (x - t))^2), D_d the forward difference along d
 * and each mean over the differenced tensor's elements; a dimension of size
 * 1 adds 0. On the edge driver (losskit/stencil.h): the node term (x - t)^2
 * and, along dim d of size n_d, the edge term (D_d x - D_d t)^2 weighted by
 * grad_weight n_d / (n_d - 1), so that the sum over all positions divided
 * by the element count is the formula above.
 *
 * Double lanes only (LK_EDGE_LOSS_F64): the gradient at a position is a
 * discrete Laplacian of x - t plus 2 (x - t), whose terms cancel where it is
 * small; formed in float lanes it would carry float rounding of its largest
 * terms (5e-5 relative error on small elements). Float32 data is widened on
 * load and the gradient rounded once, on store. With LK_STEN_RESIDUAL the
 * driver forms r = x - t once per element (exact in double from float32)
 * and passes the node x = r, t = 0 and the edges d = r[p + s] - r[p],
 * dt = 0; the formulas below read x - t and d - dt, so they hold on both
 * of the driver's paths. */
#include "losskit/stencil.h"

#define SOB_FLAGS (LK_STEN_TARGET | LK_STEN_NODE | LK_STEN_FINITE | LK_STEN_RESIDUAL)

typedef struct sobolev {
    int32_t dims;
    double grad_weight;
} sobolev;

static const lk_param_desc sob_dims = {
    .name = "dims",
    .doc = "how many trailing dimensions are differenced (at most the input's rank)",
    .type = LK_PARAM_INTEGER,
    .default_number = 2.0,
    .min = 1.0,
    .max = LK_MAX_NDIM,
};
static const lk_param_desc sob_grad_weight = {
    .name = "grad_weight",
    .doc = "the weight of the difference terms",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
};
static const lk_param_desc *const sob_params[] LK__UNUSED = {&sob_dims, &sob_grad_weight, NULL};

static const lk_slot_desc sob_input = {.name = "input",
                                       .doc = "predictions, any shape of rank >= dims",
                                       .dtypes = LK_DTYPES_FLOAT,
                                       .flags = LK_SLOT_DIFFERENTIABLE,
                                       .shape = LK_SHAPE_ANY,
                                       .values = LK_VALUES_REAL};
static const lk_slot_desc sob_target = {.name = "target",
                                        .doc = "targets shaped like input",
                                        .dtypes = LK_DTYPES_FLOAT,
                                        .shape = LK_SHAPE_LIKE_INPUT,
                                        .values = LK_VALUES_REAL};
static const lk_slot_desc *const sob_slots[] LK__UNUSED = {&sob_input, &sob_target, NULL};

static lk_status sob_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    sobolev *s = inst;
    (void)msg;
    s->dims = (int32_t)p[0].integer;
    s->grad_weight = p[1].number;
    return LK_OK;
}

static lk_status sob_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                          lk_plan *plan, lk_msg *msg)
{
    const sobolev *s = inst;
    if (slots[0].ndim < s->dims) {
        char sh[192];
        lk_shape_str(sh, sizeof sh, slots[0].ndim, slots[0].shape);
        return lk_fail(msg, LK_ERR_SHAPE,
                       "input: shape %s has rank %d; dims = %d differences that many trailing "
                       "dimensions",
                       sh, (int)slots[0].ndim, (int)s->dims);
    }
    lk_edges_plan(&slots[0], s->dims, SOB_FLAGS, reduction, plan);
    return LK_OK;
}

LK_AI void sob_node(const sobolev *s, lk_elem *e)
{
    (void)s;
    lk_v d = lk_sub(e->x, e->t);
    e->loss = lk_mul(d, d);
    e->grad = lk_add(d, d);
}

LK_AI void sob_edge(const sobolev *s, lk_edge *e)
{
    (void)s;
    lk_v u = lk_sub(e->d, e->dt);
    e->loss = lk_mul(u, u);
    e->grad = lk_add(u, u);
}

/* grad_weight n_d / (n_d - 1): the mean over the N (n_d - 1) / n_d
 * differences, times the N of the driver's mean. */
static void sob_weights(const void *inst, const lk_sten_geom *g, double *w)
{
    const sobolev *s = inst;
    w[0] = 1.0;
    for (int32_t j = 0; j < g->K; j++)
        w[1 + j] = g->n[j] > 1 && s->grad_weight != 0.0
                       ? s->grad_weight * (double)g->n[j] / (double)(g->n[j] - 1)
                       : 0.0;
}

LK_EDGE_LOSS_F64(sobolev, sobolev, sob_node, sob_edge, sob_weights, SOB_FLAGS,
                 LK_HOOKS(.init = sob_init, .plan = sob_plan),
                 .summary =
                     "Sobolev (H1-type) loss: mean squared error plus grad_weight times the "
                     "mean squared error of forward differences along the last dims dimensions",
                 .params = sob_params, .slots = sob_slots)
