/* losskit/plugin.h: the ABI between the losskit host and a loss plugin.
 *
 * This header is the specification; sdk/README.md explains it at length.
 * A plugin is a shared object that exports exactly one symbol,
 * losskit_plugin_entry (use LK_PLUGIN_ENTRY), returning a const lk_plugin.
 * It never links against the host: everything the host offers reaches it
 * through the lk_host table handed to create().
 *
 * Versioning. LK_ABI_MAJOR changes only when an existing struct member or
 * rule changes; the host refuses a plugin whose major differs from its own.
 * LK_ABI_MINOR grows when members are appended at the end of a struct; each
 * such member carries a comment "since 1.N". The host accepts a plugin built
 * against a newer minor and reads only the members it knows. Because structs
 * may grow, every array of descriptors is an array of pointers, never an array
 * of structs.
 *
 * Thread rules are given as [any-thread] (may run on several threads at once)
 * or [one-thread] (the host never calls it concurrently with itself for the
 * same object). An instance is immutable after create(), so every call that
 * takes a const instance is [any-thread]. */
#ifndef LOSSKIT_PLUGIN_H
#define LOSSKIT_PLUGIN_H

#include "losskit/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_ABI_MAJOR 1
#define LK_ABI_MINOR 6

#if defined(_WIN32)
#define LK_EXPORT __declspec(dllexport)
#else
#define LK_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/* A message buffer owned by the host. A failing call writes one line (no
 * trailing newline) into buf, at most cap bytes including the terminator;
 * the host prefixes it with the loss id. Never free it, never keep it. */
typedef struct lk_msg {
    char *buf;
    size_t cap;
} lk_msg;

/* ------------------------------------------------------------------------ */
/* Services the host hands to plugins                                        */

typedef enum lk_log_level {
    LK_LOG_ERROR = 0,
    LK_LOG_WARN = 1,
    LK_LOG_INFO = 2,
    LK_LOG_DEBUG = 3
} lk_log_level;

/* The task a parallel loop runs on [begin, end). Returns LK_OK or a failure,
 * which stops the loop; [any-thread]. */
typedef lk_status (*lk_range_fn)(void *arg, int64_t begin, int64_t end);

#define LK_HOST_VERSION_1_0 0
typedef struct lk_host {
    /* The ABI the host implements; a plugin built against a newer minor
     * checks abi_minor before it touches a member added after it. */
    uint32_t abi_major;
    uint32_t abi_minor;
    void *ctx; /* pass back as the first argument of every service */

    /* Logs one line; the host copies it. [any-thread] */
    void (*log)(void *ctx, int32_t level, const char *line);

    /* Runs fn over [0, n) cut into chunks of at least grain items on the
     * host's threads, and returns when every chunk has finished: LK_OK, or
     * the first failure in chunk order. The chunking never depends on the
     * thread count. May be called from within a kernel. [any-thread] */
    lk_status (*parallel_for)(void *ctx, int64_t n, int64_t grain, lk_range_fn fn, void *arg);

    /* Scratch memory aligned to 64 bytes, NULL on failure; freed only with
     * scratch_free by the caller that got it. [any-thread] */
    void *(*scratch_alloc)(void *ctx, size_t size);
    void (*scratch_free)(void *ctx, void *ptr);

    /* The number of threads parallel_for may use. [any-thread] */
    int32_t (*thread_count)(void *ctx);
} lk_host;

/* ------------------------------------------------------------------------ */
/* Hyperparameters                                                           */

typedef enum lk_param_type {
    LK_PARAM_NUMBER = 1,     /* a double in [min, max] */
    LK_PARAM_INTEGER = 2,    /* an integer in [min, max] */
    LK_PARAM_BOOL = 3,       /* true or false */
    LK_PARAM_CHOICE = 4,     /* one string of choices */
    LK_PARAM_NUMBER_LIST = 5 /* doubles each in [min, max], length bounded */
} lk_param_type;

/* Flags of lk_param_desc. */
#define LK_PARAM_MIN_EXCLUSIVE 0x1u /* value > min instead of >= min */
#define LK_PARAM_MAX_EXCLUSIVE 0x2u /* value < max instead of <= max */

/* One hyperparameter. The host validates every config against these before
 * the plugin sees a value. Static data, read [any-thread]. */
typedef struct lk_param_desc {
    const char *name;         /* [a-z0-9_]+, unique within the loss */
    const char *doc;          /* one line */
    int32_t type;             /* an lk_param_type */
    uint32_t flags;           /* LK_PARAM_* flags */
    double default_number;    /* NUMBER, INTEGER, BOOL (0 or 1) */
    double min;               /* NUMBER, INTEGER, each list item; -HUGE_VAL: none */
    double max;               /* likewise; HUGE_VAL: none */
    const char *const *choices; /* CHOICE: NULL-terminated */
    const char *default_choice; /* CHOICE: one of choices */
    const double *default_list; /* NUMBER_LIST: default items, may be NULL */
    int32_t default_list_len;   /* NUMBER_LIST: 0 means "not given" */
    int32_t list_min_len;       /* NUMBER_LIST: shortest accepted list */
    int32_t list_max_len;       /* NUMBER_LIST: longest, or -1 for no bound */
    /* since 1.2: NULL, or the parameter has no default value and this says
     * what the loss does when a config leaves it out ("no element is
     * ignored", "smooth", "every class"). create() still receives the
     * default_* members, with is_set 0; `losskit info` shows this instead of
     * them. One line: not empty, no control characters. */
    const char *unset;
} lk_param_desc;

/* A validated value, one per declared parameter in declaration order, with
 * defaults filled in. Valid only during create(): copy what you keep.
 * Frozen: values travel in an array, so this struct never grows. */
typedef struct lk_param_value {
    double number;      /* NUMBER; also INTEGER and BOOL as a double */
    int64_t integer;    /* INTEGER; BOOL as 0 or 1; CHOICE: index in choices */
    const char *choice; /* CHOICE: the chosen string */
    const double *list; /* NUMBER_LIST: list_len items (NULL when empty) */
    int64_t list_len;
    int32_t is_set;     /* 1 when the config gave it, 0 for the default */
} lk_param_value;

/* ------------------------------------------------------------------------ */
/* Tensor slots                                                              */

#define LK_SLOT_OPTIONAL 0x1u       /* the caller may leave it out */
#define LK_SLOT_DIFFERENTIABLE 0x2u /* the loss can give d(loss)/d(slot) */
#define LK_SLOT_PADDED                                                                             \
    0x4u /* since 1.6: the dims other than the batch dim                                           \
            may differ between processes: gathering                                                \
            pads them with zeros to the largest, which                                             \
            the loss ignores (values past a length) */

/* How the host checks a slot's shape before any plugin code runs. Slot 0 is
 * the primary input: every rule refers to its shape. */
typedef enum lk_shape_rule {
    LK_SHAPE_ANY = 0,            /* no host check; plan() checks */
    LK_SHAPE_LIKE_INPUT = 1,     /* exactly slot 0's shape */
    LK_SHAPE_INPUT_NO_CHANNEL = 2 /* slot 0's shape without dim 1 (class ids) */
} lk_shape_rule;

/* What a slot's values are (since 1.1). The host never checks data against
 * it; the conformance checker draws its test data from it. LK_VALUES_DEFAULT, and every slot of a plugin built
 * against ABI 1.0, means what 1.0 implied: slot 0 any real, a slot named
 * "weight" positive, an integer slot with rule INPUT_NO_CHANNEL class ids,
 * any other slot targets in [0, 1]. */
typedef enum lk_slot_values {
    LK_VALUES_DEFAULT = 0,
    LK_VALUES_REAL = 1,        /* any real: predictions, logits, log-probabilities */
    LK_VALUES_UNIT = 2,        /* in [0, 1]: probabilities, soft or hard targets */
    LK_VALUES_BINARY = 3,      /* 0 or 1 */
    LK_VALUES_SIGN = 4,        /* -1 or 1 */
    LK_VALUES_POSITIVE = 5,    /* > 0: variances, scales, weights */
    LK_VALUES_NONNEGATIVE = 6, /* >= 0: counts */
    LK_VALUES_CLASS = 7        /* class ids in [0, C): C is dim 1 of slot 0, or
                                  dim 0 of a one-dimensional slot 0 */
} lk_slot_values;
#define LK_VALUES_LAST LK_VALUES_CLASS

/* The numbers of dimensions a slot accepts (since 1.3), a mask of
 * LK_NDIM_BIT(d) for d = 0 ..= LK_MAX_NDIM; 0 accepts any. The host checks
 * each slot's rank before its shape rule, slot by slot in order, so that a
 * rank the loss refuses in slot 0 is reported as that, not as a target
 * shaped unlike what slot 0's refused rank would imply. A host older than
 * 1.3 does not read the mask: plan() must still refuse what it cannot
 * take. */
#define LK_NDIM_BIT(d)  (1u << (unsigned)(d))
#define LK_NDIM_ANY     ((LK_NDIM_BIT(LK_MAX_NDIM) << 1) - 1u)
#define LK_NDIM_FROM(d) (LK_NDIM_ANY & ~(LK_NDIM_BIT(d) - 1u)) /* d or more */

/* Where a slot's samples lie (since 1.6), for gathering the batch of a
 * whole-batch loss (LK_LOSS_WHOLE) that data-parallel processes hold in
 * shards: each process's tensor is cut into `batch_views` equal runs along
 * dim d, and the gathered tensor is every process's first run in process
 * order, then every process's second run, and so on. One view is a plain
 * concatenation along d; two are ntxent's (2N, D) input, whose rows i and
 * i + N are two views of one sample and must stay N apart. The host never
 * reads it for a loss that is not whole-batch: their batch is dim 0, split
 * through statistics. LK_BATCH_UNDECLARED (and every slot of a plugin older
 * than 1.6): the loss cannot be gathered. `losskit check` verifies that
 * reordering the samples along the declared dims, the same order in every
 * slot and view, leaves the value unchanged. */
#define LK_BATCH_UNDECLARED 0
#define LK_BATCH_DIM(d)     ((int32_t)(d) + 1) /* the samples run along dim d */
#define LK_MAX_BATCH_VIEWS  64

typedef struct lk_slot_desc {
    const char *name;   /* "input", "target", "weight", "var", ... */
    const char *doc;    /* one line */
    uint32_t dtypes;    /* mask of LK_DTYPE_BIT() accepted */
    uint32_t flags;     /* LK_SLOT_* flags */
    int32_t shape;      /* an lk_shape_rule */
    int32_t values;     /* since 1.1: an lk_slot_values */
    uint32_t ndims;     /* since 1.3: a mask of LK_NDIM_BIT(); 0 for any */
    int32_t batch;      /* since 1.6: LK_BATCH_DIM(d), or LK_BATCH_UNDECLARED */
    uint32_t batch_views; /* since 1.6: runs of the samples along the batch
                             dim, 1 to LK_MAX_BATCH_VIEWS; 0 means 1 */
} lk_slot_desc;

/* ------------------------------------------------------------------------ */
/* Evaluation                                                                */
/*
 * A loss is evaluated as a map over blocks of positions (docs/design.md):
 *
 *   plan      once per call: how many positions, how many statistics.
 *   forward   per block, [any-thread]: add the block's statistics into
 *             blk->stats; with reduction none, write each position's loss
 *             into blk->out. A FUSED loss also writes its gradients here.
 *   (host)    adds the blocks' statistics in block order: the result does not
 *             depend on the thread count.
 *   finalize  once: the loss value from the combined statistics.
 *   backward  per block, [any-thread], only for losses that are not FUSED:
 *             write gradients using blk->global, the combined statistics.
 *
 * A loss that cannot be decomposed (a global sort) sets LK_LOSS_WHOLE and
 * implements whole() instead of forward/finalize/backward.
 */

#define LK_BLOCK_POSITIONS 16384 /* the host's default block length */
#define LK_PLAN_AUX 8

/* Filled in by the host with defaults before plan() runs; plan() changes what
 * its loss needs. The host owns the memory; kernels get it read-only. */
typedef struct lk_plan {
    int64_t n_positions;     /* default: the element count of slot 0 */
    int64_t block_positions; /* default: LK_BLOCK_POSITIONS; must be > 0 */
    uint32_t n_stats;        /* statistics per block; default 1 (sum of loss) */
    int32_t out_ndim;        /* reduction none: the output's shape; */
    int64_t out_shape[LK_MAX_NDIM]; /* default: slot 0's shape */
    double mean_norm;        /* the divisor of "mean"; default: element count */
    int64_t aux[LK_PLAN_AUX];  /* free for the loss: values its kernels reuse */
    double auxf[LK_PLAN_AUX];
    uint32_t flags; /* since 1.4: LK_PLAN_* flags; default 0. A plugin writes
                       it only when lk_host_abi_minor >= 4 (lk_plan_set_flags):
                       an older host's lk_plan ends before it */
    uint32_t n_partials; /* since 1.5: how many numbers the loss's partials()
                            writes; default 0 (none). Written only when
                            lk_host_abi_minor >= 5 (lk_plan_set_partials) */
} lk_plan;

/* Flags of lk_plan (since 1.4). The plugin sets LK_PLAN_STATS_PER_SAMPLE
 * in plan(); the host sets LK_PLAN_SPLIT_FINISH on its own copy of the plan
 * and never asks plan() for it. */
#define LK_PLAN_STATS_PER_SAMPLE                                                                   \
    0x1u /* the statistics are kept per sample (dim 0 of                                           \
            slot 0), each sample's through a nonlinear                                             \
            function: two processes' statistics summed                                             \
            would add different samples together. The                                              \
            host splits the term across processes only                                             \
            through partials() (since 1.5), and refuses                                            \
            it when the loss has none */
#define LK_PLAN_SPLIT_FINISH                                                                       \
    0x2u /* since 1.5, set by the host: finalize() and                                             \
            backward() of lk_loss_finish for a term with                                           \
            partials. finalize's stats are then the                                                \
            partials summed over every process                                                     \
            (plan->n_partials numbers); backward's                                                 \
            blk->global is this process's combined                                                 \
            statistics (plan->n_stats) followed by those                                           \
            summed partials */

/* Sets flags in plan when the host has the member (ABI 1.4 or later); an
 * older host never reads them. Returns whether it could. */
static inline int lk_plan_set_flags(lk_plan *plan, uint32_t flags);

/* Sets plan->n_partials when the host has the member (ABI 1.5 or later);
 * an older host never calls partials(). Returns whether it could. */
static inline int lk_plan_set_partials(lk_plan *plan, uint32_t n_partials);

/* Flags of lk_block. */
#define LK_BLOCK_GRAD_ACCUMULATE 0x1u /* add into grads instead of storing */

/* One block of work. Built by the host, valid for the duration of the call. */
typedef struct lk_block {
    int64_t begin;            /* first position of the block */
    int64_t end;              /* one past the last position */
    const lk_tensor *slots;   /* one per declared slot, in order; absent
                                 optional slots have data == NULL */
    const lk_tensor *grads;   /* one per declared slot: where d(loss)/d(slot)
                                 goes, shaped like the slot; data == NULL
                                 when that gradient is not wanted */
    const lk_tensor *out;     /* reduction none: per-position losses shaped
                                 as plan->out_shape, slot 0's dtype; data ==
                                 NULL otherwise */
    double *stats;            /* plan->n_stats doubles, zeroed; add to them */
    const double *global;     /* backward: the combined statistics; NULL in
                                 forward */
    double grad_scale;        /* multiply every gradient by this (see below) */
    int32_t reduction;        /* an lk_reduction */
    uint32_t flags;           /* LK_BLOCK_* flags */
} lk_block;

/* grad_scale. For a FUSED loss, forward writes grad_scale times the gradient
 * of the plain sum of its per-position losses; the host has folded the
 * reduction's divisor and the upstream gradient into it. For backward,
 * grad_scale is the upstream gradient of the final value (1 for a plain run,
 * the term's weight in a weighted sum). With reduction none the upstream
 * gradient is 1 for every position. */

/* Flags of lk_loss_desc. */
#define LK_LOSS_FUSED 0x1u /* the gradient needs no global statistic */
#define LK_LOSS_WHOLE 0x2u /* evaluated by whole() on the whole batch */
#define LK_LOSS_UNBOUNDED 0x4u /* since 1.1: finite inputs may give an infinite value
                                  (an exp of the input, as poisson_nll's); the
                                  checker then allows it at extreme inputs */

/* Arguments of create(). Valid only during the call. */
typedef struct lk_create_args {
    const lk_host *host;                /* outlives every instance */
    const struct lk_loss_desc *desc;    /* the loss being created */
    const lk_param_value *params;       /* n_params values, declaration order */
    uint32_t n_params;
} lk_create_args;

/* Arguments of whole(): every tensor of the call at once. */
typedef struct lk_whole_args {
    const lk_tensor *slots;
    const lk_tensor *grads;
    const lk_tensor *out;
    double grad_scale;  /* upstream gradient of the value */
    int32_t reduction;
    uint32_t flags;     /* LK_BLOCK_* flags */
} lk_whole_args;

/* Limits the host enforces when it loads a plugin: a loss beyond one is
 * refused with a diagnostic naming it. Parameter names, like ids, are
 * [a-z0-9_]+ of at most LK_MAX_ID_LEN characters; a loss has at most 16
 * slots. */
#define LK_MAX_ID_LEN 64  /* characters in a loss id or a parameter or slot name */
#define LK_MAX_PARAMS 256 /* parameters per loss */

typedef struct lk_loss_desc {
    const char *id;       /* [a-z0-9_]+, at most LK_MAX_ID_LEN; the name configs use */
    const char *summary;  /* one line */
    const char *version;  /* the loss's own version, "MAJOR.MINOR.PATCH" */
    const lk_param_desc *const *params; /* NULL-terminated, at most LK_MAX_PARAMS; NULL for none */
    const lk_slot_desc *const *slots;   /* NULL-terminated; slot 0 required */
    uint32_t reductions;       /* mask of LK_REDUCTION_BIT() offered */
    int32_t default_reduction; /* one of them */
    uint32_t flags;            /* LK_LOSS_* flags */

    /* Builds an instance from validated parameters. The plugin allocates it
     * and owns it until destroy(). May be NULL: the instance is then NULL.
     * [any-thread] */
    lk_status (*create)(const lk_create_args *args, void **instance, lk_msg *msg);

    /* Frees what create() made. Called once, when no call on the instance is
     * running. NULL when create is NULL. [one-thread] */
    void (*destroy)(void *instance);

    /* Checks the call's tensors beyond the declared slot rules and fills in
     * the plan. Reads shapes and dtypes, and data only where the plan
     * depends on it (a mean's divisor counted from the targets, say). May be
     * NULL: the defaults then stand. [any-thread] */
    lk_status (*plan)(const void *instance, const lk_tensor *slots, int32_t reduction,
                      lk_plan *plan, lk_msg *msg);

    /* The block kernel described above. Required unless LK_LOSS_WHOLE.
     * [any-thread] */
    lk_status (*forward)(const void *instance, const lk_plan *plan, const lk_block *blk,
                         lk_msg *msg);

    /* The loss value from the combined statistics. May be NULL: the value
     * is then stats[0] for sum, stats[0] / mean_norm for mean, and stats[0]
     * over slot 0's dim 0 for batchmean, where a divisor of 0 (an empty
     * batch, every position ignored) gives 0. One that divides must keep
     * that rule: never NaN. [any-thread] */
    lk_status (*finalize)(const void *instance, const lk_plan *plan, const double *stats,
                          int32_t reduction, double *value, lk_msg *msg);

    /* The gradient kernel of a loss that is not FUSED; NULL when the loss has
     * no differentiable slot or is FUSED. [any-thread] */
    lk_status (*backward)(const void *instance, const lk_plan *plan, const lk_block *blk,
                          lk_msg *msg);

    /* LK_LOSS_WHOLE losses only: value, out and gradients in one call. The
     * loss may use host->parallel_for inside. [any-thread] */
    lk_status (*whole)(const void *instance, const lk_plan *plan, const lk_whole_args *args,
                       double *value, lk_msg *msg);

    /* since 1.1, optional: test data for a loss whose slots the shape rules
     * and value kinds cannot describe (ctc's lengths). For example k = 0, 1,
     * ... (k = -1: one large example, several blocks or parallel chunks),
     * the host calls it twice: first with every slots[i].data == NULL, and
     * the loss sets each slot's dtype (float slots: the dtype argument),
     * ndim and shape (shape points to LK_MAX_NDIM int64s; ndim -1 leaves an
     * optional slot unbound) and returns LK_OK, or LK_ERR_NOT_FOUND when
     * there is no example k; then with the host's buffers in data (zeroed),
     * and it fills the values from seed. A checker or benchmark uses these
     * examples instead of its own probe shapes. [any-thread] */
    lk_status (*example)(const void *instance, int32_t k, int32_t dtype, uint64_t seed,
                         lk_tensor *slots, lk_msg *msg);

    /* since 1.5, optional: split evaluation of a loss whose statistics are
     * kept per sample (LK_PLAN_STATS_PER_SAMPLE). From this process's
     * combined statistics, writes plan->n_partials numbers that add across
     * processes to those of the whole batch (a sum of per-sample losses and
     * the mean's divisor, say). lk_loss_finish then calls finalize() on the
     * summed partials, and backward() with this process's statistics and the
     * summed partials, both under LK_PLAN_SPLIT_FINISH. NULL, or
     * n_partials 0: the host refuses split evaluation of such a term.
     * [any-thread] */
    lk_status (*partials)(const void *instance, const lk_plan *plan, const double *stats,
                          double *partials, lk_msg *msg);
} lk_loss_desc;

/* ------------------------------------------------------------------------ */
/* The entry point                                                           */

typedef struct lk_plugin {
    uint32_t abi_major;  /* LK_ABI_MAJOR the plugin was built against */
    uint32_t abi_minor;  /* LK_ABI_MINOR the plugin was built against */
    const char *name;    /* the family, e.g. "tutorial" */
    const char *version; /* the plugin's own version */
    const char *summary; /* one line */
    const lk_loss_desc *const *losses; /* NULL-terminated */
} lk_plugin;

#define LK_PLUGIN_ENTRY_NAME "losskit_plugin_entry"

/* The one exported symbol. The host passes its own ABI version so that a
 * plugin may adapt or refuse (by returning NULL). The result is static data
 * that must stay valid until the module is unloaded. [one-thread] */
typedef const lk_plugin *(*lk_plugin_entry_fn)(uint32_t host_abi_major,
                                               uint32_t host_abi_minor);

/* The host's ABI version as the entry function received it, for any code
 * of the plugin that must know which members of a host struct exist (a
 * kernel reading an lk_plan member added in a later minor checks
 * lk_host_abi_minor first). Defined, hidden, by LK_PLUGIN_ENTRY; 0 before
 * the entry ran. */
#if defined(__GNUC__)
#define LK__HIDDEN __attribute__((visibility("hidden")))
#else
#define LK__HIDDEN
#endif
extern LK__HIDDEN uint32_t lk_host_abi_major;
extern LK__HIDDEN uint32_t lk_host_abi_minor;

static inline int lk_plan_set_flags(lk_plan *plan, uint32_t flags)
{
    if (lk_host_abi_major != LK_ABI_MAJOR || lk_host_abi_minor < 4)
        return 0;
    plan->flags |= flags;
    return 1;
}

static inline int lk_plan_set_partials(lk_plan *plan, uint32_t n_partials)
{
    if (lk_host_abi_major != LK_ABI_MAJOR || lk_host_abi_minor < 5)
        return 0;
    plan->n_partials = n_partials;
    return 1;
}

/* Defines the entry symbol returning the given lk_plugin, and records the
 * host's version in lk_host_abi_major / lk_host_abi_minor. */
#define LK_PLUGIN_ENTRY(plugin_var)                                                  \
    LK__HIDDEN uint32_t lk_host_abi_major;                                           \
    LK__HIDDEN uint32_t lk_host_abi_minor;                                           \
    LK_EXPORT const lk_plugin *losskit_plugin_entry(uint32_t host_abi_major,         \
                                                    uint32_t host_abi_minor);        \
    LK_EXPORT const lk_plugin *losskit_plugin_entry(uint32_t host_abi_major,         \
                                                    uint32_t host_abi_minor)         \
    {                                                                                \
        lk_host_abi_major = host_abi_major;                                          \
        lk_host_abi_minor = host_abi_minor;                                          \
        return &(plugin_var);                                                        \
    }

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_PLUGIN_H */
