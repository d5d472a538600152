/* The config loader, then evaluation: the bytes are a config's JSON; when
 * lk_loss_from_json builds a loss, it is evaluated (value and gradients,
 * and per-position output for reduction none) on small bundled tensors:
 * configs/data's image pair (input, target: 2x1x16x16 float32), its class
 * pair (mc_input 2x4x8x8 float32, mc_target 2x8x8 int64), and the loss's
 * own example 0 when it offers one. Errors must be one line; nothing may
 * crash or touch memory it does not own. */
#include <math.h>
#include <stdio.h>

#include "fuzz_common.h"
#include "losskit/losskit.h"

#define MAX_SLOTS 16

static lk_runtime *rt;
static lk_array image[2], classes[2];

static void read_or_die(const char *rel, lk_array *a)
{
    char path[4096], msg[LK_ERRMSG_CAP];
    snprintf(path, sizeof path, "%s/%s", LK_SOURCE_ROOT, rel);
    if (lk_npy_read(path, a, msg) != LK_OK) {
        fprintf(stderr, "fuzz_config: %s\n", msg);
        abort();
    }
}

static void init(void)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = LK_FUZZ_PLUGIN_DIR;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.threads = 1;
    char msg[LK_ERRMSG_CAP];
    if (lk_runtime_open(&opts, &rt, msg) != LK_OK || lk_runtime_loss_count(rt) == 0) {
        fprintf(stderr, "fuzz_config: no runtime or no losses: %s\n", msg);
        abort();
    }
    read_or_die("configs/data/input.npy", &image[0]);
    read_or_die("configs/data/target.npy", &image[1]);
    read_or_die("configs/data/mc_input.npy", &classes[0]);
    read_or_die("configs/data/mc_target.npy", &classes[1]);
}

static int is_float(int32_t dtype)
{
    return dtype == LK_DTYPE_F32 || dtype == LK_DTYPE_F64;
}

/* One evaluation of loss on the tensors bound to the first n slots (a NULL
 * data pointer leaves a slot out), with gradients for every differentiable
 * float slot and the per-position output when the reduction is none. */
static void evaluate(const lk_loss *loss, const lk_tensor *ts, size_t n)
{
    lk_named_tensor named[MAX_SLOTS], grads[MAX_SLOTS];
    lk_array gbuf[MAX_SLOTS], out;
    size_t n_named = 0, n_grads = 0;
    memset(&out, 0, sizeof out);
    char msg[LK_ERRMSG_CAP];
    for (size_t i = 0; i < n; i++) {
        const lk_slot_desc *sd;
        int32_t required, diff;
        if (!ts[i].data || lk_loss_slot_at(loss, i, &sd, &required, &diff) != LK_OK)
            continue;
        named[n_named++] = (lk_named_tensor){sd->name, ts[i], "fuzz"};
        if (diff && is_float(ts[i].dtype) &&
            lk_array_alloc(&gbuf[n_grads], ts[i].dtype, ts[i].ndim, ts[i].shape, msg) == LK_OK) {
            grads[n_grads] = (lk_named_tensor){sd->name, lk_array_view(&gbuf[n_grads]), "fuzz"};
            n_grads++;
        }
    }
    lk_eval_args args;
    if (n_named == 0)
        goto done;
    lk_eval_args_init(&args);
    args.tensors = named;
    args.n_tensors = n_named;
    args.grads = grads;
    args.n_grads = n_grads;
    lk_tensor out_view;
    if (lk_loss_reduction(loss) == LK_REDUCTION_NONE) {
        int32_t nd;
        int64_t shape[LK_MAX_NDIM];
        if (lk_loss_out_shape(loss, &args, &nd, shape) != LK_OK) {
            fuzz_check_message(args.errmsg);
            goto done;
        }
        if (lk_array_alloc(&out, named[0].tensor.dtype, nd, shape, msg) != LK_OK)
            goto done;
        out_view = lk_array_view(&out);
        args.out = &out_view;
    }
    double value = 0.0;
    lk_status st = lk_loss_eval(loss, &args, &value);
    if (getenv("LK_FUZZ_VERBOSE")) /* what a replay evaluated */
        fprintf(stderr, "  %s %s: %s %.17g %s\n", lk_loss_name(loss),
                named[0].tensor.dtype == LK_DTYPE_F64 ? "f64" : "f32", lk_status_name(st), value,
                args.errmsg);
    if (st != LK_OK) {
        FUZZ_REQUIRE(args.errmsg[0] != '\0');
        fuzz_check_message(args.errmsg);
    } else if (lk_loss_reduction(loss) == LK_REDUCTION_NONE) {
        FUZZ_REQUIRE(isnan(value));
    }
done:
    for (size_t i = 0; i < n_grads; i++)
        lk_array_free(&gbuf[i]);
    lk_array_free(&out);
}

/* Every slot bound, drawn from configs/data's class pair: slot 0 is
 * mc_input (2x4x8x8); each other slot is shaped as its rule says (like the
 * input, or without its dim 1; any: like the input), of its first accepted
 * dtype among float32, float64, int64, with values of its kind (class ids
 * in [0, 4), signs, positives, ...) from mc_input's. */
static void evaluate_all_slots(const lk_loss *loss)
{
    size_t n = lk_loss_slot_count(loss);
    if (n < 2 || n > MAX_SLOTS)
        return;
    lk_tensor ts[MAX_SLOTS];
    lk_array arr[MAX_SLOTS];
    memset(arr, 0, sizeof arr);
    const lk_array *x = &classes[0];
    const float *xv = x->data;
    char msg[LK_ERRMSG_CAP];
    ts[0] = lk_array_view(x);
    for (size_t i = 1; i < n; i++) {
        const lk_slot_desc *sd;
        int32_t required, diff;
        if (lk_loss_slot_at(loss, i, &sd, &required, &diff) != LK_OK)
            goto done;
        int32_t dtype = sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_F32)   ? LK_DTYPE_F32
                        : sd->dtypes & LK_DTYPE_BIT(LK_DTYPE_F64) ? LK_DTYPE_F64
                                                                  : LK_DTYPE_I64;
        int64_t shape[LK_MAX_NDIM];
        int32_t nd = 0;
        for (int32_t d = 0; d < x->ndim; d++)
            if (d != 1 || sd->shape != LK_SHAPE_INPUT_NO_CHANNEL)
                shape[nd++] = x->shape[d];
        if (lk_array_alloc(&arr[i], dtype, nd, shape, msg) != LK_OK)
            goto done;
        int32_t kind = lk_loss_slot_values(loss, i);
        size_t count = arr[i].nbytes / lk_dtype_size(dtype);
        for (size_t k = 0; k < count; k++) {
            double v = xv[k], a = v < 0 ? -v : v;
            switch (kind) {
            case LK_VALUES_UNIT: v = a / (1.0 + a); break;
            case LK_VALUES_BINARY: v = v > 0; break;
            case LK_VALUES_SIGN: v = v > 0 ? 1 : -1; break;
            case LK_VALUES_POSITIVE: v = 0.5 + a; break;
            case LK_VALUES_NONNEGATIVE: v = a; break;
            case LK_VALUES_CLASS: v = (double)(k % 4); break;
            default:
                if (dtype == LK_DTYPE_I64)
                    v = (double)(k % 4);
                break;
            }
            if (dtype == LK_DTYPE_F32)
                ((float *)arr[i].data)[k] = (float)v;
            else if (dtype == LK_DTYPE_F64)
                ((double *)arr[i].data)[k] = v;
            else
                ((int64_t *)arr[i].data)[k] = (int64_t)v;
        }
        ts[i] = lk_array_view(&arr[i]);
    }
    evaluate(loss, ts, n);
done:
    for (size_t i = 0; i < n; i++)
        lk_array_free(&arr[i]);
}

/* The loss's example 0 in float64, as `losskit check` draws it. */
static void evaluate_example(const lk_loss *loss)
{
    size_t n = lk_loss_slot_count(loss);
    if (!lk_loss_has_example(loss) || n > MAX_SLOTS)
        return;
    lk_tensor ts[MAX_SLOTS];
    int64_t shapes[MAX_SLOTS][LK_MAX_NDIM];
    lk_array arr[MAX_SLOTS];
    memset(ts, 0, sizeof ts);
    memset(arr, 0, sizeof arr);
    for (size_t i = 0; i < n; i++)
        ts[i].shape = shapes[i];
    char msg[LK_ERRMSG_CAP];
    if (lk_loss_example(loss, 0, LK_DTYPE_F64, 0, ts, msg) != LK_OK)
        return;
    lk_status st = LK_OK;
    for (size_t i = 0; i < n && st == LK_OK; i++) {
        if (ts[i].ndim < 0)
            continue;
        int64_t numel = 1;
        for (int32_t d = 0; d < ts[i].ndim; d++)
            numel *= ts[i].shape[d];
        if (ts[i].ndim > LK_MAX_NDIM || numel > (1 << 16))
            st = LK_ERR_INVALID; /* an example is small: not what is fuzzed here */
        else if ((st = lk_array_alloc(&arr[i], ts[i].dtype, ts[i].ndim, ts[i].shape, msg)) == LK_OK)
            memset(arr[i].data, 0, arr[i].nbytes);
        ts[i].data = arr[i].data;
    }
    if (st == LK_OK && lk_loss_example(loss, 0, LK_DTYPE_F64, 7, ts, msg) == LK_OK)
        evaluate(loss, ts, n);
    for (size_t i = 0; i < n; i++)
        lk_array_free(&arr[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rt)
        init();
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    lk_status st = lk_loss_from_json(rt, (const char *)data, size, "fuzz.json", &loss, msg);
    if (st != LK_OK) {
        FUZZ_REQUIRE(loss == NULL && msg[0] != '\0');
        fuzz_check_message(msg);
        return 0;
    }
    FUZZ_REQUIRE(loss != NULL);
    const lk_array *pairs[2] = {image, classes};
    for (int p = 0; p < 2; p++) {
        lk_tensor ts[2] = {lk_array_view(&pairs[p][0]), lk_array_view(&pairs[p][1])};
        /* bound by name: slot 0 is input; slot 1 gets the target only when
         * it is called target */
        const lk_slot_desc *sd;
        int32_t required, diff;
        size_t n = 1;
        if (lk_loss_slot_count(loss) > 1 &&
            lk_loss_slot_at(loss, 1, &sd, &required, &diff) == LK_OK &&
            strcmp(sd->name, "target") == 0)
            n = 2;
        evaluate(loss, ts, n);
    }
    evaluate_all_slots(loss);
    evaluate_example(loss);
    lk_loss_free(loss);
    return 0;
}
