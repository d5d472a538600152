/* losskit/losskit.h: the runtime API for applications that embed losskit.
 *
 * An application opens a runtime (which loads the loss plugins), builds a
 * configured loss from a JSON config, and evaluates it on tensors it
 * describes with lk_tensor (losskit/types.h). Loss descriptors
 * (losskit/plugin.h) are visible read-only so that an application can show a
 * loss's schema; an application never calls into a plugin itself.
 *
 * Thread rules: a runtime is opened and closed on one thread; lookups on an
 * open runtime are [any-thread]. An lk_loss is immutable once built:
 * lk_loss_eval may run on many threads at once on the same lk_loss. */
#ifndef LOSSKIT_LOSSKIT_H
#define LOSSKIT_LOSSKIT_H

#include "losskit/plugin.h"
#include "losskit/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LK_API __declspec(dllexport)
#else
#define LK_API __attribute__((visibility("default")))
#endif

#define LK_VERSION_STRING "0.1.0"
#define LK_ERRMSG_CAP 512

typedef struct lk_runtime lk_runtime;
typedef struct lk_loss lk_loss;

/* The name of a status code ("LK_ERR_CONFIG") and a short description. */
LK_API const char *lk_status_name(lk_status st);
LK_API const char *lk_status_text(lk_status st);

/* dtype names as .npy and configs spell them: "float32", "int64", ... */
LK_API const char *lk_dtype_name(int32_t dtype);
LK_API const char *lk_reduction_name(int32_t reduction);
LK_API int32_t lk_reduction_from_name(const char *name); /* -1 when unknown */

/* ------------------------------------------------------------------------ */
/* Runtime                                                                   */

typedef struct lk_runtime_options {
    /* Colon-separated plugin directories or .so files searched first. */
    const char *plugin_path;
    /* Nonzero: also search $LOSSKIT_PLUGIN_PATH (after plugin_path). */
    int32_t use_env_path;
    /* Nonzero: also search the build tree's or the installed plugin
     * directory (after the two above). */
    int32_t use_default_path;
    /* Worker threads for evaluation; 0: $LOSSKIT_THREADS, else the number of
     * online cores. */
    int32_t threads;
} lk_runtime_options;

/* Fills opts with the defaults: env path and default path on, threads 0. */
LK_API void lk_runtime_options_init(lk_runtime_options *opts);

/* Opens a runtime and finds what every plugin on the search path offers:
 * each file is scanned in a process of its own (or read from the scan
 * cache), and a plugin enters this process only when one of its losses is
 * built (sdk/README.md, "Loading rules"). A plugin that is refused does not
 * fail the call: it is recorded as a diagnostic (lk_runtime_diag) and the
 * others are served. Fails only when memory runs
 * out or the options are invalid; *out is then NULL and errmsg (may be NULL,
 * LK_ERRMSG_CAP bytes) says why. */
LK_API lk_status lk_runtime_open(const lk_runtime_options *opts, lk_runtime **out, char *errmsg);
LK_API void lk_runtime_close(lk_runtime *rt);

/* The name among names[0 .. n) closest to word (by edits, or a shared start
 * of at least 4 characters), or NULL when none is close: the "did you mean"
 * of every message. NULL entries are skipped. */
LK_API const char *lk_closest_name(const char *word, const char *const *names, size_t n);

/* The diagnostics of loading, one line each: "FILE: problem". */
LK_API size_t lk_runtime_diag_count(const lk_runtime *rt);
LK_API const char *lk_runtime_diag(const lk_runtime *rt, size_t i);

/* The number of threads the runtime evaluates with. */
LK_API int32_t lk_runtime_threads(const lk_runtime *rt);

/* One registered loss. Strings and desc live as long as the runtime. */
typedef struct lk_loss_info {
    const char *id;
    const char *plugin_file;    /* the .so that carries it */
    const char *plugin_name;    /* the family name the plugin declares */
    const char *plugin_version;
    const lk_loss_desc *desc;   /* read-only: as scanned, in host memory; its
                                   function members only say which are set */
    int32_t shadowed;           /* 1: an earlier plugin has the same id */
    const char *shadowed_by;    /* the winning plugin's file, when shadowed */
    uint32_t plugin_abi_minor;  /* the ABI minor the plugin was built against */
} lk_loss_info;

/* The descriptor of the plugin file plugin_file (as lk_loss_info gives
 * it), as the runtime found it when it scanned the file in a process of its
 * own, or NULL when no registered plugin has that file. It lives as long as
 * the runtime, in host memory: read it, never call its functions (a
 * plugin's code runs only in losses built with lk_loss_from_json). */
LK_API const lk_plugin *lk_runtime_plugin(const lk_runtime *rt, const char *plugin_file);

/* What slot i of a loss built against ABI 1.plugin_abi_minor holds: its
 * declared lk_slot_values, or for LK_VALUES_DEFAULT (and every slot of a
 * 1.0 plugin) what ABI 1.0 implied. Never LK_VALUES_DEFAULT. */
LK_API int32_t lk_slot_values_of(const lk_slot_desc *sd, uint32_t index,
                                 uint32_t plugin_abi_minor);

/* The numbers of dimensions slot sd of a loss built against ABI
 * 1.plugin_abi_minor accepts: its lk_slot_desc.ndims (since 1.3), a mask
 * of LK_NDIM_BIT(); 0 (any) for a plugin older than 1.3, whose struct has
 * no such member. */
LK_API uint32_t lk_slot_ndims_of(const lk_slot_desc *sd, uint32_t plugin_abi_minor);
/* Where the samples of slot sd of a loss built against ABI
 * 1.plugin_abi_minor lie (lk_slot_desc.batch, since 1.6): the batch dim, or
 * -1 when the slot declares none (and for every slot of a plugin older
 * than 1.6). *views (may be NULL) receives its batch_views, at least 1;
 * *padded (may be NULL) whether it carries LK_SLOT_PADDED. */
LK_API int32_t lk_slot_batch_of(const lk_slot_desc *sd, uint32_t plugin_abi_minor, uint32_t *views,
                                int32_t *padded);

/* What leaving parameter pd of a loss built against ABI
 * 1.plugin_abi_minor out of a config means, when it has no default value
 * (lk_param_desc.unset, since 1.2); NULL when it has one (and for every
 * parameter of a plugin older than 1.2, whose struct has no such member). */
LK_API const char *lk_param_unset_of(const lk_param_desc *pd, uint32_t plugin_abi_minor);

/* Every registered loss in search-path order, shadowed ones included. */
LK_API size_t lk_runtime_loss_count(const lk_runtime *rt);
LK_API lk_status lk_runtime_loss_at(const lk_runtime *rt, size_t i, lk_loss_info *out);

/* The loss that serves id. On LK_ERR_NOT_FOUND, errmsg (may be NULL,
 * LK_ERRMSG_CAP bytes) lists the known ids and the closest one. */
LK_API lk_status lk_runtime_find(const lk_runtime *rt, const char *id, lk_loss_info *out,
                          char *errmsg);

/* ------------------------------------------------------------------------ */
/* Configured losses                                                         */

/* Builds a loss from a JSON config (see README.md, "Configs"). source names
 * the config in messages (a file name). On failure *out is NULL and errmsg
 * (LK_ERRMSG_CAP bytes) holds one line naming source, the JSON path and the
 * problem, with control characters escaped (docs/errors.md). A config means
 * one thing: a duplicate key anywhere, a NUL character in a string or key,
 * and anything but white space after the value are errors. lk_loss_from_file
 * reads a regular file only (a FIFO or device is refused, never waited on). */
LK_API lk_status lk_loss_from_json(lk_runtime *rt, const char *json, size_t len, const char *source,
                            lk_loss **out, char *errmsg);
LK_API lk_status lk_loss_from_file(lk_runtime *rt, const char *path, lk_loss **out, char *errmsg);
LK_API void lk_loss_free(lk_loss *loss);

LK_API int32_t lk_loss_reduction(const lk_loss *loss);
/* "focal", or "0.5*bce_with_logits + 0.5*dice" for a weighted sum. */
LK_API const char *lk_loss_name(const lk_loss *loss);
/* The terms of the loss (1 for a plain config): which registered loss each
 * is, with its plugin, and its weight (1 for a plain config). */
LK_API size_t lk_loss_term_count(const lk_loss *loss);
LK_API lk_status lk_loss_term_at(const lk_loss *loss, size_t i, lk_loss_info *info,
                                 double *weight);

/* How much memory traffic one evaluation makes, in units of whole tensors:
 * *input_reads is how many times each input tensor is read (1 per term
 * forward; with backward, 2 for a term that needs a global statistic before
 * its gradient, 1 for a fused or whole-batch term); *grad_accesses is how
 * many times the gradient is read or written (0 forward; with backward, 1
 * for the first term and 2 for each term that adds into it). `losskit
 * bench` counts bytes moved with these. */
LK_API void lk_loss_traffic(const lk_loss *loss, int32_t backward, int32_t *input_reads,
                            int32_t *grad_accesses);

/* The tensors the loss reads, across all its terms: the union by name, in
 * the order first met. A tensor's name is its slot's, or the name the
 * config's "tensors" bind the slot to ({"input": "logits_x2"}: deep
 * supervision, several heads). *desc describes the tensor as the slot of
 * the first term that reads it, with desc->name the tensor's name (valid as
 * long as the loss); required is 1 when any term requires it and
 * differentiable when any term differentiates it. */
LK_API size_t lk_loss_slot_count(const lk_loss *loss);
LK_API lk_status lk_loss_slot_at(const lk_loss *loss, size_t i, const lk_slot_desc **desc,
                          int32_t *required, int32_t *differentiable);
/* What slot i holds (lk_slot_values_of() of its declaring term), or
 * LK_VALUES_DEFAULT when there is no slot i. */
LK_API int32_t lk_loss_slot_values(const lk_loss *loss, size_t i);

/* The name of the tensor that slot `slot` (in the loss descriptor's order)
 * of term `term` reads: the slot's own name, or the config's binding. NULL
 * when there is no such term or slot. Strings live as long as the loss. */
LK_API const char *lk_loss_term_tensor(const lk_loss *loss, size_t term, size_t slot);

/* Gathering a whole-batch loss across processes (since 1.6). A term that
 * takes the whole batch at once (LK_LOSS_WHOLE: ntxent, supcon, ctc,
 * lovasz) cannot be split through statistics; data-parallel processes
 * instead gather every tensor of the call, each evaluates the loss on the
 * gathered batch (the same value everywhere), and each keeps the part of
 * the gradient that belongs to its own shard. lk_loss_takes_whole_batch is
 * 1 when a term of the loss is whole-batch. lk_loss_batch_at says how
 * tensor i (as lk_loss_slot_at numbers them) is gathered: along dim *dim,
 * in *views runs (each process's tensor is cut into *views equal runs
 * along that dim, and the gathered tensor is every process's first run in
 * process order, then every second run, ...), and with *padded 1 when its
 * other dims may differ between processes and are padded with zeros to the
 * largest. A term that is not whole-batch and declares nothing has its
 * batch in dim 0 in one run. LK_ERR_UNSUPPORTED, with errmsg
 * (LK_ERRMSG_CAP bytes, may be NULL) naming the loss and slot: a
 * whole-batch term that declares no batch dim for the slot (lk_slot_desc.
 * batch, plugins older than 1.6), or two terms that read the tensor with
 * different layouts. */
LK_API int lk_loss_takes_whole_batch(const lk_loss *loss);
LK_API lk_status lk_loss_batch_at(const lk_loss *loss, size_t i, int32_t *dim, uint32_t *views,
                                  int32_t *padded, char *errmsg);
/* Whether the loss offers its own test data (lk_loss_desc.example, ABI 1.1):
 * 1 for a one-term loss whose plugin is built against minor >= 1 and sets
 * example, else 0. */
LK_API int lk_loss_has_example(const lk_loss *loss);
/* Calls that hook on the loss's instance: slots has one lk_tensor per slot
 * of the loss (lk_loss_slot_count), in slot order; see plugin.h for the two
 * calls. LK_ERR_UNSUPPORTED when lk_loss_has_example() is 0; otherwise the
 * hook's status, with errmsg (LK_ERRMSG_CAP bytes, may be NULL) naming the
 * loss and the problem. */
LK_API lk_status lk_loss_example(const lk_loss *loss, int32_t k, int32_t dtype, uint64_t seed,
                                 lk_tensor *slots, char *errmsg);

/* A tensor of a call, by name. */
typedef struct lk_named_tensor {
    const char *name;   /* "input", "target", ..., or a name a config binds */
    lk_tensor tensor;
    const char *origin; /* where it came from (a file name) for messages, or NULL */
} lk_named_tensor;

/* One evaluation. The caller owns every buffer. */
typedef struct lk_eval_args {
    const lk_named_tensor *tensors; /* inputs by tensor name (lk_loss_slot_at) */
    size_t n_tensors;
    /* Wanted gradients by tensor name: each is shaped like its tensor, of
     * its floating-point dtype, allocated by the caller and entirely
     * overwritten. A tensor that several terms read gets the sum of their
     * gradients. One of 16 MiB or more whose data starts on a 64-byte
     * boundary (lk_array_alloc's, torch's allocator's) is written with
     * streaming stores on the SIMD paths; from malloc or numpy (16-byte
     * aligned) every line of it is read before it is written: one more
     * pass over the gradient's bytes in the call's memory traffic. */
    const lk_named_tensor *grads;
    size_t n_grads;
    /* Reduction none: where the per-position losses go (shape from
     * lk_loss_out_shape, dtype of the input). NULL otherwise. */
    const lk_tensor *out;
    double grad_scale; /* the upstream gradient; 1 for a plain evaluation */
    char errmsg[LK_ERRMSG_CAP]; /* one line on failure */
} lk_eval_args;

/* Zeroes args and sets grad_scale to 1. */
LK_API void lk_eval_args_init(lk_eval_args *args);

/* Checks the tensors against the loss's slots and returns the shape of the
 * per-position output of reduction none. */
LK_API lk_status lk_loss_out_shape(const lk_loss *loss, lk_eval_args *args, int32_t *ndim,
                            int64_t shape[LK_MAX_NDIM]);

/* Evaluates the loss: *value receives the reduced value (NaN for reduction
 * none). Shapes and dtypes are checked before any plugin code runs.
 * [any-thread] */
LK_API lk_status lk_loss_eval(const lk_loss *loss, lk_eval_args *args, double *value);

/* Split evaluation: one loss over a batch sharded across processes (data
 * parallelism), exact as if one process held the whole batch.
 *
 * Each process calls lk_loss_stats on its shard, which writes the shard's
 * statistics: for each term of the loss in order, what its mean divides by
 * (the element count, or the loss's own divisor), its batch size (dim 0 of
 * the input, the divisor of batchmean), then the loss's own statistics
 * (sums: of losses, or sum p*t, sum p, sum t for a region loss). The caller
 * adds these element by element over every process (an all-reduce with
 * SUM: MPI_Allreduce, torch.distributed.all_reduce) and hands the sums to
 * lk_loss_finish on each process, with the same tensors and the wanted
 * gradients: *value is the loss of the whole batch (the same on every
 * process) and each gradient is that value's gradient with respect to this
 * process's tensors, times args->grad_scale. lk_loss_stats ignores grads
 * and out; lk_loss_finish reads the tensors again only when gradients are
 * wanted (a two-pass loss runs its backward from the summed statistics; a
 * FUSED loss reruns its forward with the gradient scaled by the global
 * divisor). A term whose statistics are kept per sample (a region loss
 * with per_sample) writes its partials instead (the sums its value is
 * formed from, which do add across processes; sdk/README.md), and its
 * finish runs its statistics pass again before its backward.
 *
 * Every process must use the same config and tensors that differ only in
 * dim 0 (the batch), so that the statistics line up: lk_loss_stats_count
 * gives their number for the tensors at hand. Refused with LK_ERR_UNSUPPORTED
 * and one line in args->errmsg: a loss with a term that takes the whole
 * batch at once (LK_LOSS_WHOLE: ntxent, supcon, ctc, lovasz), whose
 * statistics cannot be summed (gather its batch instead: lk_loss_batch_at
 * above); a term whose statistics are kept per sample
 * (LK_PLAN_STATS_PER_SAMPLE) by a loss without partials, which summed
 * across processes would add different samples together; and reduction
 * none, which has none (evaluate each shard with lk_loss_eval).
 * lk_loss_finish fails with LK_ERR_INVALID when count is not the number
 * these tensors have. [any-thread] */
LK_API lk_status lk_loss_stats_count(const lk_loss *loss, lk_eval_args *args, size_t *count);
LK_API lk_status lk_loss_stats(const lk_loss *loss, lk_eval_args *args, double *stats,
                               size_t count);
LK_API lk_status lk_loss_finish(const lk_loss *loss, lk_eval_args *args, const double *global,
                                size_t count, double *value);

/* ------------------------------------------------------------------------ */
/* .npy files                                                                */

/* A tensor that owns its memory: data and shape live in the struct. Use
 * lk_array_view() for an lk_tensor pointing into it; do not copy an lk_array
 * by value and then free both. */
typedef struct lk_array {
    void *data;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    size_t nbytes;
} lk_array;

static inline lk_tensor lk_array_view(const lk_array *a)
{
    lk_tensor t;
    t.data = a->data;
    t.dtype = a->dtype;
    t.ndim = a->ndim;
    t.shape = a->shape;
    t.strides = NULL;
    return t;
}

/* The size in bytes of one element of dtype, 0 when unknown. */
LK_API size_t lk_dtype_size(int32_t dtype);

/* Allocates a zeroed C-order array, its data aligned to 64 bytes; an array
 * of 4 MiB or more is aligned to 2 MiB and advised to the kernel as huge
 * pages (madvise), which large streaming losses run faster on. Sizes are
 * overflow-checked. Free with lk_array_free. */
LK_API lk_status lk_array_alloc(lk_array *a, int32_t dtype, int32_t ndim, const int64_t *shape,
                                char *errmsg);
LK_API void lk_array_free(lk_array *a);

/* Reads a .npy file (format 1.0, 2.0 or 3.0; little-endian float32, float64,
 * int64, int32, uint8 or bool; C order). Anything else is refused with one
 * line in errmsg (LK_ERRMSG_CAP bytes) naming the file and the problem. The
 * file must be a regular file (not a pipe or FIFO): the header's size is
 * checked against the file's before anything is allocated. */
LK_API lk_status lk_npy_read(const char *path, lk_array *out, char *errmsg);

/* Writes a tensor (C order or explicit strides) as a .npy 1.0 file. */
LK_API lk_status lk_npy_write(const char *path, const lk_tensor *t, char *errmsg);

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_LOSSKIT_H */
