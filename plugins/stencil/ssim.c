/* ssim: 1 - the mean SSIM map of Wang et al. (2004) between input and
 * target (N, C, H, W), per channel, with a Gaussian window of `window` taps
 * and standard deviation `sigma` applied without padding (the valid
 * positions), window-weighted raw moments and C1 = (k1 L)^2, C2 = (k2 L)^2,
 * L = data_range: as pytorch-msssim's ssim and kornia's ssim_loss
 * (padding aside). On the window driver (losskit/stencil.h): five fields
 * x, x^2, x t, t, t^2 filtered separably, the map per valid position
 *
 *   S = (2 mx mt + C1)(2 sxt + C2) / ((mx^2 + mt^2 + C1)(sxx + stt + C2)),
 *   sxx = E[x^2] - mx^2, stt = E[t^2] - mt^2, sxt = E[x t] - mx mt,
 *
 * term 1 - S, and the gradient d/dx = G0 + 2 x G1 + t G2 from the
 * back-filtered partials of the term by mx, E[x^2] and E[x t]. */
#include "losskit/stencil.h"

typedef struct ssim {
    lk_window win;
    double c1, c2;
} ssim;

static const lk_param_desc ssim_window = {
    .name = "window",
    .doc = "the Gaussian window's side, odd",
    .type = LK_PARAM_INTEGER,
    .default_number = 11.0,
    .min = 1.0,
    .max = LK_WIN_MAX_TAPS,
};
static const lk_param_desc ssim_sigma = {
    .name = "sigma",
    .doc = "the Gaussian window's standard deviation",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.5,
    .min = 0.0,
    .max = HUGE_VAL,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
};
static const lk_param_desc ssim_range = {
    .name = "data_range",
    .doc = "L, the range of the values (1 for images in [0, 1], 255 for bytes)",
    .type = LK_PARAM_NUMBER,
    .default_number = 1.0,
    .min = 0.0,
    .max = HUGE_VAL,
    .flags = LK_PARAM_MIN_EXCLUSIVE,
};
static const lk_param_desc ssim_k1 = {
    .name = "k1",
    .doc = "C1 = (k1 L)^2 stabilises the luminance term",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.01,
    .min = 0.0,
    .max = 1.0,
};
static const lk_param_desc ssim_k2 = {
    .name = "k2",
    .doc = "C2 = (k2 L)^2 stabilises the contrast-structure term",
    .type = LK_PARAM_NUMBER,
    .default_number = 0.03,
    .min = 0.0,
    .max = 1.0,
};
static const lk_param_desc *const ssim_params[] LK__UNUSED = {
    &ssim_window, &ssim_sigma, &ssim_range, &ssim_k1, &ssim_k2, NULL};

static const lk_slot_desc ssim_input = {.name = "input",
                                        .doc = "images (N, C, H, W), H and W >= window",
                                        .dtypes = LK_DTYPES_FLOAT,
                                        .flags = LK_SLOT_DIFFERENTIABLE,
                                        .shape = LK_SHAPE_ANY,
                                        .values = LK_VALUES_REAL};
static const lk_slot_desc ssim_target = {.name = "target",
                                         .doc = "reference images shaped like input",
                                         .dtypes = LK_DTYPES_FLOAT,
                                         .shape = LK_SHAPE_LIKE_INPUT,
                                         .values = LK_VALUES_UNIT};
static const lk_slot_desc *const ssim_slots[] LK__UNUSED = {&ssim_input, &ssim_target, NULL};

static lk_status ssim_init(void *inst, const lk_param_value *p, lk_msg *msg)
{
    ssim *s = inst;
    if (p[0].integer % 2 == 0)
        return lk_fail(msg, LK_ERR_INVALID, "window = %lld; the window must be odd",
                       (long long)p[0].integer);
    lk_window_gauss(&s->win, (int32_t)p[0].integer, p[1].number);
    s->c1 = (p[3].number * p[2].number) * (p[3].number * p[2].number);
    s->c2 = (p[4].number * p[2].number) * (p[4].number * p[2].number);
    return LK_OK;
}

static lk_status ssim_plan(const void *inst, const lk_tensor *slots, int32_t reduction,
                           lk_plan *plan, lk_msg *msg)
{
    const ssim *s = inst;
    (void)reduction;
    return lk_window_plan("ssim", &slots[0], &slots[1], s->win.n, plan, msg);
}

LK_AI const lk_window *ssim_win(const ssim *s)
{
    return &s->win;
}

/* The fields, those that depend on x first: x, x^2, x t, then t, t^2. */
LK_AI void ssim_fields(const ssim *s, lk_v x, lk_v t, lk_v *f)
{
    (void)s;
    f[0] = x;
    f[1] = lk_mul(x, x);
    f[2] = lk_mul(x, t);
    f[3] = t;
    f[4] = lk_mul(t, t);
}

LK_AI void ssim_map(const ssim *s, const lk_v *m, lk_v *loss, lk_v *dm)
{
    lk_v mx = m[0], mt = m[3], mxmt = lk_mul(mx, mt);
    lk_v sxx = lk_fma(lk_neg(mx), mx, m[1]), stt = lk_fma(lk_neg(mt), mt, m[4]);
    lk_v sxt = lk_sub(m[2], mxmt);
    lk_v c1 = lk_set(s->c1), c2 = lk_set(s->c2), two = lk_set(2.0);
    lk_v a1 = lk_fma(two, mxmt, c1), a2 = lk_fma(two, sxt, c2);
    lk_v b1 = lk_add(lk_fma(mx, mx, lk_mul(mt, mt)), c1), b2 = lk_add(lk_add(sxx, stt), c2);
    lk_v r = lk_div(lk_set(1.0), lk_mul(b1, b2));
    lk_v S = lk_mul(lk_mul(a1, a2), r);
    *loss = lk_sub(lk_set(1.0), S);
    if (!dm)
        return;
    /* d(1 - S): by mx, E[x^2], E[x t] */
    lk_v d0 = lk_sub(lk_mul(mt, lk_sub(a2, a1)), lk_mul(lk_mul(mx, S), lk_sub(b2, b1)));
    dm[0] = lk_mul(lk_set(-2.0), lk_mul(d0, r));
    dm[1] = lk_div(S, b2);
    dm[2] = lk_mul(lk_set(-2.0), lk_mul(a1, r));
}

LK_AI lk_v ssim_grad(const ssim *s, lk_v x, lk_v t, const lk_v *G)
{
    (void)s;
    return lk_fma(t, G[2], lk_fma(lk_add(x, x), G[1], G[0]));
}

LK_WINDOW_LOSS(ssim, ssim, ssim_win, 5, 3, ssim_fields, ssim_map, ssim_grad,
               LK_HOOKS(.init = ssim_init, .plan = ssim_plan),
               .summary = "1 - mean SSIM (Wang et al. 2004) with a Gaussian window, per channel, "
                          "valid positions",
               .params = ssim_params, .slots = ssim_slots)
