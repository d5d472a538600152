/* runtime.c: opening a runtime, the services table, registry lookups. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

void lk_runtime_options_init(lk_runtime_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->use_env_path = 1;
    opts->use_default_path = 1;
}

static void host_log(void *ctx, int32_t level, const char *line)
{
    (void)ctx;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (level < LK_LOG_ERROR || level > LK_LOG_DEBUG)
        level = LK_LOG_INFO;
    if (level <= LK_LOG_WARN || getenv("LOSSKIT_DEBUG")) {
        char safe[1024]; /* a plugin's line: escaped, so it stays one line */
        lk__escape(safe, sizeof safe, line ? line : "");
        fprintf(stderr, "losskit: %s: %s\n", names[level], safe);
    }
}

static lk_status host_parallel_for(void *ctx, int64_t n, int64_t grain, lk_range_fn fn, void *arg)
{
    lk_runtime *rt = ctx;
    return lk__pool_for(rt->pool, n, grain, fn, arg);
}

/* Scratch blocks of SCRATCH_MAP_MIN bytes or more are mapped and unmapped
 * directly. From malloc's heap, a large block freed after a call is kept
 * (glibc raises its mmap threshold to the size of the largest block freed,
 * up to 32 MiB, and trims only above twice that), and the next call's block
 * of the same size may not fit the hole an alignment or a small live
 * allocation leaves: a whole-batch loss that takes tens of MiB per call held
 * several generations of them. Each block carries a 64-byte header (its
 * alignment is kept) saying how it was taken and, mapped, its length. */
#define SCRATCH_MAP_MIN ((size_t)1 << 20)
#define SCRATCH_HDR     ((size_t)64)
#define SCRATCH_HEAP    0x6c6b686561700000ull /* "lkheap" */
#define SCRATCH_MAPPED  0x6c6b6d6170000000ull /* "lkmap" */

static void *host_scratch_alloc(void *ctx, size_t size)
{
    (void)ctx;
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size || rounded > SIZE_MAX - SCRATCH_HDR - 65536)
        return NULL;
    size_t total = rounded + SCRATCH_HDR;
    uint64_t *hdr;
    if (total >= SCRATCH_MAP_MIN) {
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        hdr = m;
        hdr[0] = SCRATCH_MAPPED;
        hdr[1] = (uint64_t)total;
    } else {
        void *p = NULL;
        if (posix_memalign(&p, 64, total) != 0)
            return NULL;
        hdr = p;
        hdr[0] = SCRATCH_HEAP;
    }
    return (char *)hdr + SCRATCH_HDR;
}

static void host_scratch_free(void *ctx, void *ptr)
{
    (void)ctx;
    if (!ptr)
        return;
    uint64_t *hdr = (uint64_t *)(void *)((char *)ptr - SCRATCH_HDR);
    if (hdr[0] == SCRATCH_MAPPED)
        munmap(hdr, (size_t)hdr[1]);
    else
        free(hdr);
}

static int32_t host_thread_count(void *ctx)
{
    const lk_runtime *rt = ctx;
    return rt->threads;
}

/* Threads from the options, else $LOSSKIT_THREADS, else the core count. */
static lk_status pick_threads(int32_t asked, int32_t *out, char *errmsg)
{
    if (asked < 0 || asked > 1024)
        return lk__err(errmsg, LK_ERR_INVALID, "threads: %d is out of range [0, 1024]", asked);
    if (asked == 0) {
        const char *env = getenv("LOSSKIT_THREADS");
        if (env && *env) {
            char *end;
            long v = strtol(env, &end, 10);
            if (*end || v < 1 || v > 1024)
                return lk__err(errmsg, LK_ERR_INVALID,
                               "LOSSKIT_THREADS: '%s' is not a thread count in [1, 1024]", env);
            asked = (int32_t)v;
        } else {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            asked = cores > 0 ? (int32_t)(cores > 1024 ? 1024 : cores) : 1;
        }
    }
    *out = asked;
    return LK_OK;
}

lk_status lk_runtime_open(const lk_runtime_options *opts, lk_runtime **out, char *errmsg)
{
    lk_runtime_options defaults;
    if (!out)
        return lk__err(errmsg, LK_ERR_INVALID, "lk_runtime_open: out is NULL");
    *out = NULL;
    if (!opts) {
        lk_runtime_options_init(&defaults);
        opts = &defaults;
    }
    lk_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return lk__err(errmsg, LK_ERR_NOMEM, "out of memory");
    rt->refs = 1; /* the handle lk_runtime_close releases */
    lk_status st = pick_threads(opts->threads, &rt->threads, errmsg);
    if (st == LK_OK && (st = lk__pool_create(rt->threads, &rt->pool)) != LK_OK)
        lk__err(errmsg, st, "cannot start %d threads", rt->threads);
    if (st != LK_OK) {
        free(rt);
        return st;
    }
    rt->threads = lk__pool_threads(rt->pool);
    rt->host = (lk_host){
        .abi_major = LK_ABI_MAJOR,
        .abi_minor = LK_ABI_MINOR,
        .ctx = rt,
        .log = host_log,
        .parallel_for = host_parallel_for,
        .scratch_alloc = host_scratch_alloc,
        .scratch_free = host_scratch_free,
        .thread_count = host_thread_count,
    };
    pthread_mutex_t *lock = malloc(sizeof *lock);
    if (!lock || pthread_mutex_init(lock, NULL) != 0) {
        free(lock);
        lk__pool_destroy(rt->pool);
        free(rt);
        return lk__err(errmsg, LK_ERR_NOMEM, "out of memory");
    }
    rt->reg.load_lock = lock;
    lk__registry_load(&rt->reg, opts->plugin_path);
    if (opts->use_env_path)
        lk__registry_load(&rt->reg, getenv("LOSSKIT_PLUGIN_PATH"));
    if (opts->use_default_path)
        lk__registry_load(&rt->reg, lk__default_plugin_path());
    lk__registry_finish(&rt->reg);
    *out = rt;
    return LK_OK;
}

static void runtime_free(lk_runtime *rt)
{
    lk__registry_free(&rt->reg);
    lk__pool_destroy(rt->pool);
    free(rt);
}

/* Modules stay loaded while any loss built from them lives: the runtime
 * handle and every live loss each hold one reference, and whoever drops the
 * last one frees the runtime, so closing with live losses defers the
 * unloading to the last lk_loss_free. One atomic count decides: a close
 * racing with the last release frees exactly once. */
void lk_runtime_close(lk_runtime *rt)
{
    if (rt && __atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) == 0)
        runtime_free(rt);
}

void lk__runtime_release(lk_runtime *rt)
{
    if (__atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) == 0)
        runtime_free(rt);
}

size_t lk_runtime_diag_count(const lk_runtime *rt)
{
    return rt->reg.n_diags;
}

const char *lk_runtime_diag(const lk_runtime *rt, size_t i)
{
    return i < rt->reg.n_diags ? rt->reg.diags[i] : NULL;
}

int32_t lk_runtime_threads(const lk_runtime *rt)
{
    return rt->threads;
}

size_t lk_runtime_loss_count(const lk_runtime *rt)
{
    return rt->reg.n_entries;
}

void lk__fill_info(const lk__registry *reg, const lk__entry *e, lk_loss_info *out)
{
    out->id = e->desc->id;
    out->plugin_file = e->module->path;
    out->plugin_name = e->module->plugin->name;
    out->plugin_version = e->module->plugin->version;
    out->desc = e->desc;
    out->shadowed = e->shadowed;
    out->shadowed_by = e->shadowed ? reg->entries[e->winner].module->path : NULL;
    out->plugin_abi_minor = e->module->plugin->abi_minor;
}

int32_t lk_slot_values_of(const lk_slot_desc *sd, uint32_t index, uint32_t plugin_abi_minor)
{
    if (plugin_abi_minor >= 1 && sd->values != LK_VALUES_DEFAULT)
        return sd->values;
    if (index == 0)
        return LK_VALUES_REAL;
    if (strcmp(sd->name, "weight") == 0)
        return LK_VALUES_POSITIVE;
    if (sd->shape == LK_SHAPE_INPUT_NO_CHANNEL && (sd->dtypes & ~LK_DTYPES_FLOAT))
        return LK_VALUES_CLASS;
    return LK_VALUES_UNIT;
}

lk_status lk_runtime_loss_at(const lk_runtime *rt, size_t i, lk_loss_info *out)
{
    if (i >= rt->reg.n_entries)
        return LK_ERR_NOT_FOUND;
    lk__fill_info(&rt->reg, &rt->reg.entries[i], out);
    return LK_OK;
}

lk_status lk_runtime_find(const lk_runtime *rt, const char *id, lk_loss_info *out, char *errmsg)
{
    const lk__entry *e = lk__registry_find(&rt->reg, id);
    if (!e) {
        char hint[LK_ERRMSG_CAP - 64];
        lk__registry_suggest(&rt->reg, id, hint, sizeof hint);
        return lk__err(errmsg, LK_ERR_NOT_FOUND, "unknown loss '%s'; %s", id, hint);
    }
    lk__fill_info(&rt->reg, e, out);
    return LK_OK;
}

size_t lk_loss_term_count(const lk_loss *loss)
{
    return loss->n_terms;
}

lk_status lk_loss_term_at(const lk_loss *loss, size_t i, lk_loss_info *info, double *weight)
{
    if (i >= loss->n_terms)
        return LK_ERR_NOT_FOUND;
    if (info)
        lk__fill_info(&loss->rt->reg, loss->terms[i].entry, info);
    if (weight)
        *weight = loss->terms[i].weight;
    return LK_OK;
}

const lk_plugin *lk_runtime_plugin(const lk_runtime *rt, const char *plugin_file)
{
    for (size_t i = 0; plugin_file && i < rt->reg.n_modules; i++)
        if (strcmp(rt->reg.modules[i]->path, plugin_file) == 0)
            return rt->reg.modules[i]->plugin;
    return NULL;
}
