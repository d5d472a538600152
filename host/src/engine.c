/* engine.c: evaluates a configured loss on tensors.
 *
 * For each term: bind the caller's tensors to the loss's slots and check
 * them (before any plugin code runs), plan, run forward over fixed-size
 * blocks of positions on the pool, add the blocks' statistics pairwise in
 * block order, finalize, and run backward when the loss is not FUSED. The
 * blocks and the order of the additions depend only on the data's size, so
 * the result is bitwise identical for any thread count. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_STATS (1u << 20)

typedef struct bound {
    const lk__term *term;
    const lk__entry *e;
    lk_tensor slots[LK__MAX_SLOTS];
    lk_tensor grads[LK__MAX_SLOTS];
    const char *origin[LK__MAX_SLOTS];
    int32_t grad_index[LK__MAX_SLOTS]; /* into args->grads, or -1 */
    lk_plan plan;
} bound;

/* A kernel run over all blocks of a term. */
typedef struct run {
    const bound *b;
    int32_t reduction;
    int backward;
    uint32_t flags;
    double grad_scale;
    double *stats;        /* n_blocks * n_stats */
    const double *global; /* backward only */
    const lk_tensor *out;
    pthread_mutex_t lock;
    int64_t err_block;
    char err[LK_ERRMSG_CAP / 2];
} run;

void lk_eval_args_init(lk_eval_args *args)
{
    memset(args, 0, sizeof *args);
    args->grad_scale = 1.0;
}

static const char *origin_of(const lk_named_tensor *t)
{
    return t->origin ? t->origin : t->name;
}

static int is_c_contiguous(const lk_tensor *t)
{
    if (!t->strides)
        return 1;
    int64_t expect = 1;
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->strides[d] != expect)
            return 0;
        expect *= t->shape[d];
    }
    return 1;
}

/* Checks what any tensor must satisfy, whatever the loss. The tensor's
 * origin is escaped for a message only (SHOWN), not on every call. */
static lk_status check_tensor(const lk_named_tensor *nt, char *err)
{
    const lk_tensor *t = &nt->tensor;
    char shown[LK__PATH_BUF];
#define SHOWN lk__short_path(shown, origin_of(nt))
    if (lk_dtype_size(t->dtype) == 0)
        return lk__err(err, LK_ERR_DTYPE, "%s: invalid dtype code %d", SHOWN, t->dtype);
    if (t->ndim < 0 || t->ndim > LK_MAX_NDIM || (t->ndim > 0 && !t->shape))
        return lk__err(err, LK_ERR_SHAPE, "%s: invalid ndim %d (0 to %d)", SHOWN, t->ndim,
                       LK_MAX_NDIM);
    int64_t n = 1;
    for (int32_t d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0)
            return lk__err(err, LK_ERR_SHAPE, "%s: negative size in dim %d", SHOWN, d);
        if (__builtin_mul_overflow(n, t->shape[d], &n) || n > (INT64_MAX >> 4))
            return lk__err(err, LK_ERR_SHAPE, "%s: element count overflows", SHOWN);
    }
    if (n > 0 && !t->data)
        return lk__err(err, LK_ERR_INVALID, "%s: data is NULL", SHOWN);
    if (!is_c_contiguous(t))
        return lk__err(err, LK_ERR_UNSUPPORTED,
                       "%s: strided tensors are not supported yet; pass a C-contiguous one", SHOWN);
#undef SHOWN
    return LK_OK;
}

static int same_shape(const lk_tensor *a, int32_t ndim, const int64_t *shape)
{
    if (a->ndim != ndim)
        return 0;
    for (int32_t d = 0; d < ndim; d++)
        if (a->shape[d] != shape[d])
            return 0;
    return 1;
}

static void dtypes_str(uint32_t mask, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int32_t d = LK_DTYPE_F32; d <= LK_DTYPE_BOOL && used < cap; d++)
        if (mask & LK_DTYPE_BIT(d))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "",
                                     lk_dtype_name(d));
}

/* The shape a slot must have, by its rule; 0 for LK_SHAPE_ANY. */
static int expected_shape(const lk_slot_desc *sd, const lk_tensor *input, int32_t *ndim,
                          int64_t *shape)
{
    if (sd->shape == LK_SHAPE_LIKE_INPUT) {
        *ndim = input->ndim;
        if (input->ndim > 0)
            memcpy(shape, input->shape, (size_t)input->ndim * sizeof *shape);
        return 1;
    }
    if (sd->shape == LK_SHAPE_INPUT_NO_CHANNEL) {
        *ndim = input->ndim > 0 ? input->ndim - 1 : 0;
        for (int32_t d = 0, k = 0; d < input->ndim; d++)
            if (d != 1 && !(input->ndim == 1 && d == 0))
                shape[k++] = input->shape[d];
        return 1;
    }
    return 0;
}

/* " ($.terms[i])" for a term of a weighted sum, which may name one loss
 * twice, so that a message says which term it is about; "" otherwise. */
static const char *term_where(const lk_loss *loss, const lk__term *term, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (loss->is_sum)
        snprintf(buf, cap, " ($.terms[%zu])", (size_t)(term - loss->terms));
    return buf;
}

static lk_status check_slot(const lk_loss *loss, const bound *b, uint32_t s, char *err)
{
    const lk_slot_desc *sd = b->e->slots[s];
    const lk_tensor *t = &b->slots[s];
    uint32_t ndims = lk_slot_ndims_of(sd, b->e->module->plugin->abi_minor);
    int32_t nd = 0;
    int64_t shape[LK_MAX_NDIM];
    int bad_dtype = !(sd->dtypes & LK_DTYPE_BIT(t->dtype));
    int bad_rank = !bad_dtype && ndims && !(ndims & LK_NDIM_BIT(t->ndim));
    int bad_shape = !bad_dtype && !bad_rank && s > 0 &&
                    expected_shape(sd, &b->slots[0], &nd, shape) && !same_shape(t, nd, shape);
    if (!bad_dtype && !bad_rank && !bad_shape)
        return LK_OK;
    /* a refusal: its message's parts (on every call they would cost the
     * small calls a path escaped per slot) */
    char where[48];
    term_where(loss, b->term, where, sizeof where);
    const char *id = b->e->desc->id;
    char origin[LK__PATH_BUF];
    lk__short_path(origin, b->origin[s]);
    if (bad_dtype) {
        char ok[96];
        dtypes_str(sd->dtypes, ok, sizeof ok);
        return lk__err(err, LK_ERR_DTYPE, "loss '%s'%s: %s (%s): dtype %s is not accepted (%s)",
                       id, where, sd->name, origin, lk_dtype_name(t->dtype), ok);
    }
    char got[160];
    lk_shape_str(got, sizeof got, t->ndim, t->shape);
    if (bad_rank) {
        char want[96];
        lk__ndims_str(want, sizeof want, ndims);
        return lk__err(err, LK_ERR_SHAPE,
                       "loss '%s'%s: %s (%s): shape %s has %d dimension%s, expected %s (%s)", id,
                       where, sd->name, origin, got, (int)t->ndim, t->ndim == 1 ? "" : "s", want,
                       sd->doc ? sd->doc : "its declared ranks");
    }
    /* the first slot named, with its tensor: the rule is relative to it,
     * and it may be the one that is wrong (an anchor of the wrong batch
     * size is reported at the positive that disagrees with it) */
    char want[160], in[160], first[LK__PATH_BUF + 80], o0[LK__PATH_BUF];
    lk_shape_str(want, sizeof want, nd, shape);
    const char *name0 = b->e->slots[0]->name;
    lk__short_path(o0, b->origin[0]);
    if (strcmp(o0, name0) == 0)
        snprintf(first, sizeof first, "%s", name0);
    else
        snprintf(first, sizeof first, "%s (%s)", name0, o0);
    if (sd->shape == LK_SHAPE_LIKE_INPUT)
        return lk__err(err, LK_ERR_SHAPE,
                       "loss '%s'%s: %s (%s): shape %s, expected %s, the shape of %s", id, where,
                       sd->name, origin, got, want, first);
    /* the input's shape named: where the input is itself of a rank the loss
     * refuses without declaring it (its plan says so later), the target's
     * expected shape alone would send the user to reshape the wrong tensor */
    lk_shape_str(in, sizeof in, b->slots[0].ndim, b->slots[0].shape);
    return lk__err(
        err, LK_ERR_SHAPE,
        "loss '%s'%s: %s (%s): shape %s, expected %s: the shape of %s, %s, without dim 1", id,
        where, sd->name, origin, got, want, first, in);
}

static const lk_named_tensor *find_named(const lk_named_tensor *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].name && strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

/* Binds the caller's tensors to one term's slots and checks them. */
static lk_status bind_term(const lk_loss *loss, const lk__term *term, lk_eval_args *args, bound *b)
{
    memset(b, 0, sizeof *b);
    b->term = term;
    b->e = term->entry;
    for (uint32_t s = 0; s < b->e->n_slots; s++) {
        const lk_slot_desc *sd = b->e->slots[s];
        const char *name = lk__term_tensor(term, s);
        const lk_named_tensor *nt = find_named(args->tensors, args->n_tensors, name);
        b->grad_index[s] = -1;
        if (!nt) {
            if (sd->flags & LK_SLOT_OPTIONAL)
                continue;
            /* a weighted sum may read one loss twice: say which term */
            char where[48], slot[96] = "";
            term_where(loss, term, where, sizeof where);
            if (term->bound[s])
                snprintf(slot, sizeof slot, " for slot '%s'", sd->name);
            return lk__err(args->errmsg, LK_ERR_NOT_FOUND,
                           "loss '%s'%s: missing tensor '%s'%s (%s)", b->e->desc->id, where, name,
                           slot, sd->doc ? sd->doc : "required");
        }
        b->slots[s] = nt->tensor;
        b->origin[s] = origin_of(nt);
        lk_status st = check_slot(loss, b, s, args->errmsg);
        if (st != LK_OK)
            return st;
        const lk_named_tensor *g = find_named(args->grads, args->n_grads, name);
        if (g && (sd->flags & LK_SLOT_DIFFERENTIABLE)) {
            b->grads[s] = g->tensor;
            b->grad_index[s] = (int32_t)(g - args->grads);
        }
    }
    return LK_OK;
}

static void default_plan(const bound *b, lk_plan *p)
{
    const lk_tensor *in = &b->slots[0];
    memset(p, 0, sizeof *p);
    p->n_positions = lk__numel(in->ndim, in->shape);
    p->block_positions = LK_BLOCK_POSITIONS;
    p->n_stats = 1;
    p->out_ndim = in->ndim;
    if (in->ndim > 0)
        memcpy(p->out_shape, in->shape, (size_t)in->ndim * sizeof *in->shape);
    p->mean_norm = (double)p->n_positions;
}

/* The number of blocks a valid plan makes. */
static int64_t block_count(const lk_plan *p)
{
    return p->n_positions ? (p->n_positions - 1) / p->block_positions + 1 : 0;
}

/* Every size in a plan comes from plugin code: each is bounded, and so is
 * each product the host forms from them (blocks x statistics, the output's
 * element count), before anything is allocated or indexed with them. */
static int plan_ok(const lk_plan *p, char *why, size_t cap)
{
    if (p->n_positions < 0) {
        snprintf(why, cap, "n_positions is negative (%lld)", (long long)p->n_positions);
        return 0;
    }
    if (p->block_positions < 1) {
        snprintf(why, cap, "block_positions is %lld; it must be positive",
                 (long long)p->block_positions);
        return 0;
    }
    if (p->n_partials > MAX_STATS) {
        snprintf(why, cap, "n_partials is %lu; it must be at most %lu",
                 (unsigned long)p->n_partials, (unsigned long)MAX_STATS);
        return 0;
    }
    if (p->n_stats < 1 || p->n_stats > MAX_STATS) {
        snprintf(why, cap, "n_stats is %lu; it must be 1 to %lu", (unsigned long)p->n_stats,
                 (unsigned long)MAX_STATS);
        return 0;
    }
    if (p->out_ndim < 0 || p->out_ndim > LK_MAX_NDIM) {
        snprintf(why, cap, "out_ndim is %d; it must be 0 to %d", (int)p->out_ndim, LK_MAX_NDIM);
        return 0;
    }
    uint64_t elems = 1;
    for (int32_t d = 0; d < p->out_ndim; d++) {
        if (p->out_shape[d] < 0) {
            snprintf(why, cap, "out_shape[%d] is negative (%lld)", (int)d,
                     (long long)p->out_shape[d]);
            return 0;
        }
        uint64_t dim = (uint64_t)p->out_shape[d];
        if (dim && elems > (uint64_t)INT64_MAX / 8 / dim) {
            snprintf(why, cap, "out_shape has more elements than a tensor can hold");
            return 0;
        }
        elems = dim ? elems * dim : elems;
    }
    uint64_t blocks = (uint64_t)block_count(p);
    if (blocks > SIZE_MAX / sizeof(double) / p->n_stats) {
        snprintf(why, cap, "%llu blocks x %lu statistics overflow the statistics buffer's size",
                 (unsigned long long)blocks, (unsigned long)p->n_stats);
        return 0;
    }
    return 1;
}

/* " ($.terms[1]: input=logits_x2 from FILE, ...)" for a term whose slots are
 * bound to other tensors, so that a plugin's message about its "target"
 * names the tensor it read; "" otherwise. */
static void bound_where(const lk_loss *loss, const bound *b, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t s = 0; s < b->e->n_slots && used < cap; s++) {
        if (!b->term->bound[s] || !b->origin[s]) /* bound, and given */
            continue;
        if (used == 0 && loss->is_sum)
            used += (size_t)snprintf(buf, cap, " ($.terms[%zu]: ", (size_t)(b->term - loss->terms));
        else if (used == 0)
            used += (size_t)snprintf(buf, cap, " ($: ");
        else
            used += (size_t)snprintf(buf + used, cap - used, ", ");
        char origin[LK__PATH_BUF];
        if (used < cap)
            used += (size_t)snprintf(buf + used, cap - used, "%s=%s from %s", b->e->slots[s]->name,
                                     b->term->bound[s], lk__short_path(origin, b->origin[s]));
    }
    if (used > 0 && used < cap)
        snprintf(buf + used, cap - used, ")");
    else if (used == 0)
        term_where(loss, b->term, buf, cap);
}

/* The tensor a slot read, for a message: its file, or the name the caller
 * gave it; NULL where that says nothing the slot's name does not (the
 * API's tensors named as their slots) or where bound_where names it. */
static const char *shown_origin(const bound *b, uint32_t s, char *buf)
{
    const char *o = b->origin[s];
    if (!o || b->term->bound[s] || strcmp(o, b->e->slots[s]->name) == 0)
        return NULL;
    return lk__short_path(buf, o);
}

/* A plugin's message names its tensors by slot, as "target: shape ...",
 * "input[0, 2] = 1.5 is ..." or "var has ...": the tensor's origin goes
 * after the slot's name, or after its element's index, as the host's own
 * messages put it ("target (t.npy): ...", "input[0, 2] (x.npy) = ..."). A
 * message that starts otherwise is copied as it is. */
static void with_origin(const bound *b, const char *msg, char *out, size_t cap)
{
    for (uint32_t s = 0; s < b->e->n_slots; s++) {
        const char *name = b->e->slots[s]->name;
        size_t n = strlen(name);
        if (strncmp(msg, name, n) != 0 || (msg[n] != ':' && msg[n] != ' ' && msg[n] != '['))
            continue;
        char buf[LK__PATH_BUF];
        const char *o = shown_origin(b, s, buf);
        if (!o)
            break;
        if (msg[n] == '[') {
            const char *close = strchr(msg + n, ']');
            if (!close)
                break;
            n = (size_t)(close + 1 - msg);
        }
        snprintf(out, cap, "%.*s (%s)%s", (int)n, msg, o, msg + n);
        return;
    }
    snprintf(out, cap, "%s", msg);
}

/* A plugin's refusal: the loss, its term and bindings, the stage ("" or
 * "backward: "), and the plugin's message with its tensors' origins. */
static lk_status plugin_err(const lk_loss *loss, const bound *b, lk_status st, const char *stage,
                            const char *msg, char *err)
{
    char where[LK_ERRMSG_CAP / 2], text[LK_ERRMSG_CAP];
    bound_where(loss, b, where, sizeof where);
    with_origin(b, msg[0] ? msg : lk_status_text(st), text, sizeof text);
    return lk__err(err, st, "loss '%s'%s: %s%s", b->e->desc->id, where, stage, text);
}

static lk_status plan_term(const lk_loss *loss, bound *b, lk_eval_args *args)
{
    const lk_loss_desc *d = b->e->impl;
    default_plan(b, &b->plan);
    if (d->plan) {
        char msg[LK_ERRMSG_CAP / 2] = "";
        lk_msg m = {msg, sizeof msg};
        lk_status st = d->plan(b->term->instance, b->slots, loss->reduction, &b->plan, &m);
        if (st != LK_OK)
            return plugin_err(loss, b, st, "", msg, args->errmsg);
        /* the host's own flag: never taken from plan() */
        b->plan.flags &= ~LK_PLAN_SPLIT_FINISH;
    }
    char why[160];
    if (!plan_ok(&b->plan, why, sizeof why))
        return lk__err(args->errmsg, LK_ERR_INTERNAL,
                       "loss '%s': plan() returned an invalid plan: %s (a plugin bug)", d->id, why);
    return LK_OK;
}

static lk_status check_out(const lk_loss *loss, const bound *b, lk_eval_args *args)
{
    const lk_tensor *o = args->out;
    if (loss->reduction != LK_REDUCTION_NONE) {
        if (o)
            return lk__err(args->errmsg, LK_ERR_INVALID,
                           "an output tensor is given but the reduction is '%s', not 'none'",
                           lk_reduction_name(loss->reduction));
        return LK_OK;
    }
    if (!o)
        return LK_OK;
    lk_named_tensor nt = {"out", *o, "out"};
    lk_status st = check_tensor(&nt, args->errmsg);
    if (st != LK_OK)
        return st;
    if (o->dtype != b->slots[0].dtype || !same_shape(o, b->plan.out_ndim, b->plan.out_shape)) {
        char want[160];
        lk_shape_str(want, sizeof want, b->plan.out_ndim, b->plan.out_shape);
        return lk__err(args->errmsg, LK_ERR_SHAPE, "out: expected shape %s of dtype %s", want,
                       lk_dtype_name(b->slots[0].dtype));
    }
    return LK_OK;
}

/* Checks the call as a whole: every tensor and gradient names a slot. */
static lk_status check_args(const lk_loss *loss, lk_eval_args *args)
{
    for (size_t i = 0; i < args->n_tensors; i++) {
        const lk_named_tensor *nt = &args->tensors[i];
        size_t k = 0;
        while (nt->name && k < loss->n_slots && strcmp(loss->slots[k].desc->name, nt->name))
            k++;
        if (!nt->name || k == loss->n_slots) {
            char known[256] = "";
            size_t used = 0;
            for (size_t j = 0; j < loss->n_slots && used < sizeof known; j++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", j ? ", " : "",
                                         loss->slots[j].desc->name);
            char shown[LK__PATH_BUF];
            return lk__err(args->errmsg, LK_ERR_NOT_FOUND,
                           "%s: '%s' is not a tensor slot of %s (slots: %s)",
                           lk__short_path(shown, origin_of(nt)), nt->name ? nt->name : "(null)",
                           loss->name, known);
        }
        if (find_named(args->tensors, i, nt->name))
            return lk__err(args->errmsg, LK_ERR_INVALID, "tensor '%s' is given twice", nt->name);
        lk_status st = check_tensor(nt, args->errmsg);
        if (st != LK_OK)
            return st;
    }
    for (size_t i = 0; i < args->n_grads; i++) {
        const lk_named_tensor *g = &args->grads[i];
        const lk_named_tensor *t =
            g->name ? find_named(args->tensors, args->n_tensors, g->name) : NULL;
        size_t k = 0;
        while (t && k < loss->n_slots && strcmp(loss->slots[k].desc->name, g->name))
            k++;
        if (!t || !loss->slots[k].differentiable)
            return lk__err(args->errmsg, LK_ERR_INVALID,
                           "gradient '%s': %s has no differentiable tensor of that name",
                           g->name ? g->name : "(null)", loss->name);
        lk_status st = check_tensor(g, args->errmsg);
        if (st != LK_OK)
            return st;
        if (g->tensor.dtype != t->tensor.dtype ||
            !same_shape(&g->tensor, t->tensor.ndim, t->tensor.shape)) {
            char shown[LK__PATH_BUF];
            return lk__err(args->errmsg, LK_ERR_SHAPE,
                           "%s: the gradient of '%s' must have its tensor's shape and dtype (%s)",
                           lk__short_path(shown, origin_of(g)), g->name,
                           lk_dtype_name(t->tensor.dtype));
        }
    }
    return LK_OK;
}

static lk_status block_task(void *arg, int64_t begin, int64_t end)
{
    run *r = arg;
    const bound *b = r->b;
    const lk_plan *p = &b->plan;
    for (int64_t blk_i = begin; blk_i < end; blk_i++) {
        char msg[LK_ERRMSG_CAP / 2] = "";
        lk_msg m = {msg, sizeof msg};
        int64_t first = blk_i * p->block_positions; /* < n_positions: no overflow */
        lk_block blk = {
            .begin = first,
            .end = p->n_positions - first > p->block_positions ? first + p->block_positions
                                                               : p->n_positions,
            .slots = b->slots,
            .grads = b->grads,
            .out = r->out,
            .stats = r->stats ? r->stats + (size_t)blk_i * p->n_stats : NULL,
            .global = r->global,
            .grad_scale = r->grad_scale,
            .reduction = r->reduction,
            .flags = r->flags,
        };
        const lk_loss_desc *d = b->e->impl;
        lk_status st = r->backward ? d->backward(b->term->instance, p, &blk, &m)
                                   : d->forward(b->term->instance, p, &blk, &m);
        if (st != LK_OK) {
            pthread_mutex_lock(&r->lock);
            if (blk_i < r->err_block) {
                r->err_block = blk_i;
                snprintf(r->err, sizeof r->err, "%s", msg[0] ? msg : lk_status_text(st));
            }
            pthread_mutex_unlock(&r->lock);
            return st;
        }
    }
    return LK_OK;
}

/* Runs forward or backward over every block; kernel failures name the loss
 * and the first failing block's message. */
static lk_status run_blocks(const lk_loss *loss, run *r, lk_eval_args *args)
{
    const lk_plan *p = &r->b->plan;
    int64_t n_blocks = block_count(p);
    r->err_block = INT64_MAX;
    r->err[0] = '\0';
    pthread_mutex_init(&r->lock, NULL);
    lk_status st = lk__pool_for(loss->rt->pool, n_blocks, 1, block_task, r);
    pthread_mutex_destroy(&r->lock);
    if (st != LK_OK) /* forward's refusals are the data's; backward's are rare */
        return plugin_err(loss, r->b, st, r->backward ? "backward: " : "", r->err, args->errmsg);
    return LK_OK;
}

/* Adds block statistics pairwise, in an order fixed by the block count. */
static void combine(double *stats, int64_t n_blocks, uint32_t n_stats)
{
    for (int64_t step = 1; step < n_blocks; step *= 2)
        for (int64_t i = 0; i + step < n_blocks; i += 2 * step) {
            double *dst = stats + (size_t)i * n_stats;
            const double *src = stats + (size_t)(i + step) * n_stats;
            for (uint32_t k = 0; k < n_stats; k++)
                dst[k] += src[k];
        }
}

static double batch_size(const bound *b)
{
    return b->slots[0].ndim > 0 ? (double)b->slots[0].shape[0] : 1.0;
}

/* The factor that turns the gradient of the plain sum of per-position losses
 * into the gradient of the reduced value. */
static double reduction_factor(const lk_plan *plan, double batch, int32_t reduction)
{
    /* a mean over nothing is 0 (see finalize): so is its gradient */
    switch (reduction) {
    case LK_REDUCTION_MEAN: return plan->mean_norm != 0.0 ? 1.0 / plan->mean_norm : 0.0;
    case LK_REDUCTION_BATCHMEAN: return batch != 0.0 ? 1.0 / batch : 0.0;
    default: return 1.0;
    }
}

/* The value from combined statistics; plan->mean_norm and batch are the
 * divisors of mean and batchmean (local, or summed over processes). */
static lk_status finalize(const lk_loss *loss, const bound *b, const lk_plan *plan,
                          const double *stats, double batch, lk_eval_args *args, double *value)
{
    const lk_loss_desc *d = b->e->impl;
    if (loss->reduction == LK_REDUCTION_NONE) {
        *value = NAN;
        return LK_OK;
    }
    if (!d->finalize) {
        /* divide rather than multiply by a reciprocal: exact for the mean */
        double divisor = loss->reduction == LK_REDUCTION_MEAN        ? plan->mean_norm
                         : loss->reduction == LK_REDUCTION_BATCHMEAN ? batch
                                                                     : 1.0;
        /* The mean over no positions (an empty batch, every target
         * ignored) is 0, not torch's 0/0 = NaN: a shard or a batch with
         * nothing to learn from adds nothing (docs/design.md). */
        *value = divisor != 0.0 ? stats[0] / divisor : 0.0;
        return LK_OK;
    }
    char msg[LK_ERRMSG_CAP / 2] = "";
    lk_msg m = {msg, sizeof msg};
    lk_status st = d->finalize(b->term->instance, plan, stats, loss->reduction, value, &m);
    if (st != LK_OK)
        return plugin_err(loss, b, st, "finalize: ", msg, args->errmsg);
    return LK_OK;
}

static int wants_grad(const bound *b)
{
    for (uint32_t s = 0; s < b->e->n_slots; s++)
        if (b->grads[s].data)
            return 1;
    return 0;
}

/* Kernels may read out->data without testing out: an absent output is a
 * tensor whose data is NULL, never a NULL pointer. */
static const lk_tensor absent_tensor;

static const lk_tensor *out_or_absent(const lk_loss *loss, const lk_eval_args *args)
{
    if (loss->reduction == LK_REDUCTION_NONE && args->out)
        return args->out;
    return &absent_tensor;
}

static lk_status run_whole(const lk_loss *loss, const bound *b, lk_eval_args *args, uint32_t flags,
                           double upstream, double *value)
{
    const lk_loss_desc *d = b->e->impl;
    lk_whole_args w = {b->slots, b->grads,        out_or_absent(loss, args),
                       upstream, loss->reduction, flags};
    char msg[LK_ERRMSG_CAP / 2] = "";
    lk_msg m = {msg, sizeof msg};
    lk_status st = d->whole(b->term->instance, &b->plan, &w, value, &m);
    if (st != LK_OK)
        return plugin_err(loss, b, st, "", msg, args->errmsg);
    return LK_OK;
}

/* How run_term serves its caller: a whole evaluation, the local statistics
 * of split evaluation, or its finish from statistics summed elsewhere. */
enum { RUN_EVAL, RUN_STATS, RUN_FINISH };

/* A split term's statistics: its mean divisor, its batch size, then the
 * plugin's n_stats statistics. */
#define SPLIT_HEAD 2

/* *out: b with no gradient wanted, for a pass that must not write them. */
static void without_grads(const bound *b, bound *out)
{
    static const lk_tensor no_grads[LK__MAX_SLOTS];
    *out = *b;
    memcpy(out->grads, no_grads, sizeof no_grads);
}

/* Whether split evaluation takes b's term through its partials: statistics
 * kept per sample, and a loss (of ABI 1.5 or later) that turns them into
 * numbers that add across processes. */
static int offers_partials(const bound *b)
{
    const lk_loss_desc *d = b->e->impl;
    return b->e->module->plugin->abi_minor >= 5 && d->partials && b->plan.n_partials > 0;
}

static int uses_partials(const bound *b)
{
    const lk_loss_desc *d = b->e->impl;
    return (b->plan.flags & LK_PLAN_STATS_PER_SAMPLE) && offers_partials(b) && d->finalize &&
           !(d->flags & (LK_LOSS_FUSED | LK_LOSS_WHOLE));
}

/* The number of split statistics of b's term after its head. */
static size_t split_len(const bound *b)
{
    return uses_partials(b) ? b->plan.n_partials : b->plan.n_stats;
}

/* Split evaluation of a term with partials. Stats: this process's
 * statistics, turned into its partials. Finish: the value from the summed
 * partials; for gradients, this process's statistics again, then backward
 * with them followed by the summed partials, under LK_PLAN_SPLIT_FINISH. */
static lk_status run_partials(const lk_loss *loss, const bound *b0, lk_eval_args *args,
                              uint32_t flags, double *value, int mode, double *split)
{
    const lk_loss_desc *d = b0->e->impl;
    const lk_plan *p = &b0->plan;
    bound gb = *b0;
    gb.plan.flags |= LK_PLAN_SPLIT_FINISH;
    if (mode == RUN_FINISH) {
        gb.plan.mean_norm = split[0];
        lk_status st = finalize(loss, &gb, &gb.plan, split + SPLIT_HEAD, split[1], args, value);
        if (st != LK_OK || !wants_grad(b0))
            return st;
    }
    int64_t n_blocks = block_count(p);
    size_t count = (size_t)(n_blocks > 0 ? n_blocks : 1) * p->n_stats; /* plan_ok bounds it */
    double *stats = calloc(count + p->n_partials, sizeof *stats);
    if (!stats)
        return lk__err(args->errmsg, LK_ERR_NOMEM, "out of memory for %zu statistics", count);
    /* the statistics pass must not see the gradient buffers */
    bound fwd_b;
    without_grads(b0, &fwd_b);
    run r = {.b = &fwd_b,
             .reduction = loss->reduction,
             .flags = flags,
             .stats = stats,
             .out = &absent_tensor};
    lk_status st = run_blocks(loss, &r, args);
    if (st == LK_OK)
        combine(stats, n_blocks, p->n_stats);
    if (st == LK_OK && mode == RUN_STATS) {
        split[0] = p->mean_norm;
        split[1] = batch_size(b0);
        memset(split + SPLIT_HEAD, 0, p->n_partials * sizeof *split);
        char msg[LK_ERRMSG_CAP / 2] = "";
        lk_msg m = {msg, sizeof msg};
        st = d->partials(b0->term->instance, p, stats, split + SPLIT_HEAD, &m);
        if (st != LK_OK)
            st = plugin_err(loss, b0, st, "partials: ", msg, args->errmsg);
    } else if (st == LK_OK) {
        memcpy(stats + p->n_stats, split + SPLIT_HEAD, p->n_partials * sizeof *stats);
        run back = {.b = &gb,
                    .reduction = loss->reduction,
                    .backward = 1,
                    .flags = flags,
                    .grad_scale = args->grad_scale * b0->term->weight,
                    .global = stats,
                    .out = &absent_tensor};
        st = run_blocks(loss, &back, args);
    }
    free(stats);
    return st;
}

static lk_status run_term(const lk_loss *loss, const bound *b0, lk_eval_args *args, uint32_t flags,
                          double *value, int mode, double *split)
{
    const lk_loss_desc *d = b0->e->impl;
    double upstream = args->grad_scale * b0->term->weight;
    if (d->flags & LK_LOSS_WHOLE)
        return run_whole(loss, b0, args, flags, upstream, value);
    if (mode != RUN_EVAL && uses_partials(b0))
        return run_partials(loss, b0, args, flags, value, mode, split);
    /* finish: the plan the kernels see has the global divisor */
    bound gb;
    const bound *b = b0;
    double batch = batch_size(b0);
    if (mode == RUN_FINISH) {
        gb = *b0;
        gb.plan.mean_norm = split[0];
        batch = split[1];
        b = &gb;
    }
    const lk_plan *p = &b->plan;
    int fused = (d->flags & LK_LOSS_FUSED) != 0;
    int grads = mode != RUN_STATS && wants_grad(b);
    if (mode == RUN_FINISH) {
        lk_status st = finalize(loss, b, p, split + SPLIT_HEAD, batch, args, value);
        if (st != LK_OK || !grads)
            return st;
        if (!fused) {
            run back = {.b = b,
                        .reduction = loss->reduction,
                        .backward = 1,
                        .flags = flags,
                        .grad_scale = upstream,
                        .global = split + SPLIT_HEAD,
                        .out = &absent_tensor};
            return run_blocks(loss, &back, args);
        }
        /* a fused loss writes its gradient in forward: run it again, scaled
         * by the global divisor; its statistics are not needed */
    }
    int64_t n_blocks = block_count(p);
    size_t count = (size_t)(n_blocks > 0 ? n_blocks : 1) * p->n_stats; /* plan_ok bounds it */
    /* Small calls keep their statistics on the stack: no allocation. */
    double small[256];
    double *stats =
        count <= 256 ? memset(small, 0, count * sizeof *small) : calloc(count, sizeof *stats);
    if (!stats)
        return lk__err(args->errmsg, LK_ERR_NOMEM, "out of memory for %zu statistics", count);
    run r = {.b = b,
             .reduction = loss->reduction,
             .flags = flags,
             .stats = stats,
             .out = mode == RUN_EVAL ? out_or_absent(loss, args) : &absent_tensor};
    bound fwd_b;
    const bound *fb = b;
    if (fused && mode != RUN_STATS) {
        r.grad_scale = upstream * reduction_factor(p, batch, loss->reduction);
    } else if (wants_grad(b)) {
        /* forward of a two-pass loss, and the statistics of split
         * evaluation, must not see the gradient buffers */
        without_grads(b, &fwd_b);
        fb = &fwd_b;
    }
    r.b = fb;
    lk_status st = run_blocks(loss, &r, args);
    if (st == LK_OK && mode == RUN_STATS) {
        combine(stats, n_blocks, p->n_stats);
        split[0] = p->mean_norm;
        split[1] = batch;
        memcpy(split + SPLIT_HEAD, stats, p->n_stats * sizeof *stats);
    } else if (st == LK_OK && mode == RUN_EVAL) {
        combine(stats, n_blocks, p->n_stats);
        st = finalize(loss, b, p, stats, batch, args, value);
        if (st == LK_OK && !fused && grads) {
            run back = {.b = b,
                        .reduction = loss->reduction,
                        .backward = 1,
                        .flags = flags,
                        .grad_scale = upstream,
                        .global = stats,
                        .out = &absent_tensor};
            st = run_blocks(loss, &back, args);
        }
    }
    if (stats != small)
        free(stats);
    return st;
}

static void zero_unwritten(lk_eval_args *args, const uint8_t *written)
{
    for (size_t i = 0; i < args->n_grads; i++) {
        const lk_tensor *t = &args->grads[i].tensor;
        if (!written[i] && t->data)
            memset(t->data, 0, (size_t)lk__numel(t->ndim, t->shape) * lk_dtype_size(t->dtype));
    }
}

lk_status lk_loss_out_shape(const lk_loss *loss, lk_eval_args *args, int32_t *ndim,
                            int64_t shape[LK_MAX_NDIM])
{
    args->errmsg[0] = '\0';
    bound b;
    lk_status st = check_args(loss, args);
    if (st == LK_OK)
        st = bind_term(loss, &loss->terms[0], args, &b);
    if (st == LK_OK)
        st = plan_term(loss, &b, args);
    if (st != LK_OK)
        return st;
    *ndim = b.plan.out_ndim;
    memcpy(shape, b.plan.out_shape, sizeof b.plan.out_shape);
    return LK_OK;
}

/* Refuses split evaluation where it cannot be exact. */
static lk_status split_ok(const lk_loss *loss, lk_eval_args *args)
{
    if (loss->reduction == LK_REDUCTION_NONE)
        return lk__err(args->errmsg, LK_ERR_UNSUPPORTED,
                       "%s: reduction 'none' has no statistics to sum across processes; "
                       "evaluate each shard with lk_loss_eval",
                       loss->name);
    for (size_t i = 0; i < loss->n_terms; i++) {
        const lk_loss_desc *d = loss->terms[i].entry->impl;
        if (d->flags & LK_LOSS_WHOLE)
            return lk__err(args->errmsg, LK_ERR_UNSUPPORTED,
                           "loss '%s' takes the whole batch at once (LK_LOSS_WHOLE): its "
                           "statistics cannot be summed across processes; gather the batch "
                           "instead (lk_loss_batch_at)",
                           d->id);
    }
    return LK_OK;
}

/* Binds and plans every term before any kernel runs, so that a bad tensor
 * never leaves half-written gradients behind; *n_split is the length of
 * the split statistics. */
static lk_status bind_all(const lk_loss *loss, lk_eval_args *args, bound *bs, size_t *n_split,
                          int split)
{
    lk_status st = LK_OK;
    *n_split = 0;
    for (size_t i = 0; st == LK_OK && i < loss->n_terms; i++) {
        st = bind_term(loss, &loss->terms[i], args, &bs[i]);
        if (st == LK_OK)
            st = plan_term(loss, &bs[i], args);
        if (st == LK_OK && i == 0)
            st = check_out(loss, &bs[0], args);
        /* the host zeroes plan.flags before plan(): a plugin older than
         * ABI 1.4 leaves them 0 */
        if (st == LK_OK && split && (bs[i].plan.flags & LK_PLAN_STATS_PER_SAMPLE) &&
            !uses_partials(&bs[i])) {
            char where[48];
            const char *why = !offers_partials(&bs[i])
                                  ? "has no partials() to split them by"
                                  : "has partials(), which the host uses only for a two-pass "
                                    "loss with its own finalize() (a plugin bug)";
            st = lk__err(args->errmsg, LK_ERR_UNSUPPORTED,
                         "loss '%s'%s keeps its statistics per sample and %s: summed across "
                         "processes they would add different samples together; gather the "
                         "batch on one process, or use the loss without per-sample statistics",
                         bs[i].e->desc->id, term_where(loss, &loss->terms[i], where, sizeof where),
                         why);
        }
        if (st == LK_OK)
            *n_split += SPLIT_HEAD + split_len(&bs[i]);
    }
    return st;
}

static lk_status eval_common(const lk_loss *loss, lk_eval_args *args, double *value, int mode,
                             double *split, size_t n_split)
{
    args->errmsg[0] = '\0';
    if (value)
        *value = NAN;
    if (args->n_grads > 64)
        return lk__err(args->errmsg, LK_ERR_INVALID, "too many gradients requested");
    if (!isfinite(args->grad_scale))
        return lk__err(args->errmsg, LK_ERR_INVALID, "grad_scale must be finite");
    lk_status st = mode == RUN_EVAL ? LK_OK : split_ok(loss, args);
    if (st == LK_OK)
        st = check_args(loss, args);
    if (st != LK_OK)
        return st;
    bound local[2];
    bound *bs = loss->n_terms <= 2 ? local : calloc(loss->n_terms, sizeof *bs);
    if (!bs)
        return lk__err(args->errmsg, LK_ERR_NOMEM, "out of memory");
    size_t need = 0;
    st = bind_all(loss, args, bs, &need, mode != RUN_EVAL);
    if (st == LK_OK && mode != RUN_EVAL && n_split != need)
        st = lk__err(args->errmsg, LK_ERR_INVALID,
                     "%s: %zu statistics given, but these tensors have %zu (see "
                     "lk_loss_stats_count)",
                     loss->name, n_split, need);
    uint8_t written[64] = {0};
    double total = 0.0;
    size_t off = 0;
    for (size_t i = 0; st == LK_OK && i < loss->n_terms; i++) {
        const bound *b = &bs[i];
        uint32_t flags = 0;
        if (mode != RUN_STATS) {
            /* A gradient buffer is stored into by its first writer and added
             * to by the others; a term writes all of its requested gradients. */
            for (uint32_t s = 0; s < b->e->n_slots; s++)
                if (b->grad_index[s] >= 0 && written[b->grad_index[s]])
                    flags = LK_BLOCK_GRAD_ACCUMULATE;
            if (flags) {
                for (uint32_t s = 0; s < b->e->n_slots; s++)
                    if (b->grad_index[s] >= 0 && !written[b->grad_index[s]]) {
                        const lk_tensor *t = &b->grads[s];
                        memset(t->data, 0,
                               (size_t)lk__numel(t->ndim, t->shape) * lk_dtype_size(t->dtype));
                    }
            }
        }
        double v = 0.0;
        st = run_term(loss, b, args, flags, &v, mode, split ? split + off : NULL);
        off += SPLIT_HEAD + split_len(b);
        for (uint32_t s = 0; st == LK_OK && mode != RUN_STATS && s < b->e->n_slots; s++)
            if (b->grad_index[s] >= 0)
                written[b->grad_index[s]] = 1;
        total += b->term->weight * v;
    }
    if (st == LK_OK && mode != RUN_STATS) {
        zero_unwritten(args, written);
        *value = loss->reduction == LK_REDUCTION_NONE ? NAN : total;
    }
    if (bs != local)
        free(bs);
    return st;
}

lk_status lk_loss_eval(const lk_loss *loss, lk_eval_args *args, double *value)
{
    return eval_common(loss, args, value, RUN_EVAL, NULL, 0);
}

lk_status lk_loss_stats_count(const lk_loss *loss, lk_eval_args *args, size_t *count)
{
    args->errmsg[0] = '\0';
    *count = 0;
    lk_status st = split_ok(loss, args);
    if (st == LK_OK)
        st = check_args(loss, args);
    if (st != LK_OK)
        return st;
    bound local[2];
    bound *bs = loss->n_terms <= 2 ? local : calloc(loss->n_terms, sizeof *bs);
    if (!bs)
        return lk__err(args->errmsg, LK_ERR_NOMEM, "out of memory");
    st = bind_all(loss, args, bs, count, 1);
    if (bs != local)
        free(bs);
    return st;
}

lk_status lk_loss_stats(const lk_loss *loss, lk_eval_args *args, double *stats, size_t count)
{
    if (!stats && count) {
        args->errmsg[0] = '\0';
        return lk__err(args->errmsg, LK_ERR_INVALID, "stats is NULL");
    }
    return eval_common(loss, args, NULL, RUN_STATS, stats, count);
}

lk_status lk_loss_finish(const lk_loss *loss, lk_eval_args *args, const double *global,
                         size_t count, double *value)
{
    if (!global && count) {
        args->errmsg[0] = '\0';
        *value = NAN;
        return lk__err(args->errmsg, LK_ERR_INVALID, "global statistics are NULL");
    }
    /* run_term reads them only in finish mode */
    union {
        const double *c;
        double *m;
    } g = {.c = global};
    return eval_common(loss, args, value, RUN_FINISH, g.m, count);
}
