/* test_abi: the plugin ABI cannot drift silently.
 *
 * - Every struct of plugin.h and types.h has its size and member offsets
 *   pinned to literals worked out by hand for x86-64 LP64 (pointers and
 *   size_t 8 bytes, double and int64_t 8-aligned, int32_t 4). A member moved,
 *   retyped or inserted anywhere but at the end changes a number here: that is
 *   a new ABI major, not an edit. Appending a member (a new minor) changes
 *   only the size, which is then updated here together with LK_ABI_MINOR.
 * - Every value that crosses the boundary (status codes, dtypes, flags...)
 *   and every function-pointer signature is pinned as well.
 * - Every built plugin exports exactly one dynamic symbol, the entry.
 * - Every public header compiles alone as C11/C17 and C++11/C++17. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losskit/kernel.h"
#include "losskit/losskit.h"
#include "losskit/plugin.h"
#include "losskit/types.h"

#if !defined(__x86_64__) || !defined(__LP64__)
#error "the pinned layouts below are for x86-64 LP64; add a table for this target"
#endif

#define PIN_SIZE(T, n)                                                                   \
    cr_expect_eq(sizeof(T), (size_t)(n), "sizeof(" #T ") is %zu, pinned at %zu",        \
                 sizeof(T), (size_t)(n))
#define PIN_OFF(T, m, n)                                                                 \
    cr_expect_eq(offsetof(T, m), (size_t)(n), "offsetof(" #T ", " #m ") is %zu, pinned at %zu", \
                 offsetof(T, m), (size_t)(n))

/* ------------------------------------------------------------------------ */
/* Versions and constants                                                    */

Test(abi, version_is_1_6)
{
    cr_expect_eq(LK_ABI_MAJOR, 1, "LK_ABI_MAJOR is %d", LK_ABI_MAJOR);
    cr_expect_eq(LK_ABI_MINOR, 6, "LK_ABI_MINOR is %d", LK_ABI_MINOR);
    cr_expect_str_eq(LK_PLUGIN_ENTRY_NAME, "losskit_plugin_entry", "entry name changed");
}

Test(abi, status_codes)
{
    /* Plugins return these; their values are compiled into every plugin. */
    const int expected[] = {0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13};
    const int actual[] = {LK_OK,           LK_ERR_INVALID,     LK_ERR_NOMEM,   LK_ERR_DTYPE,
                          LK_ERR_SHAPE,    LK_ERR_UNSUPPORTED, LK_ERR_NUMERIC, LK_ERR_IO,
                          LK_ERR_FORMAT,   LK_ERR_CONFIG,      LK_ERR_NOT_FOUND,
                          LK_ERR_LOAD,     LK_ERR_VERSION,     LK_ERR_INTERNAL};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        cr_expect_eq(actual[i], expected[i], "status #%zu is %d, pinned at %d", i, actual[i],
                     expected[i]);
}

Test(abi, enum_values)
{
    cr_expect_eq(LK_DTYPE_INVALID, 0, "dtype");
    cr_expect_eq(LK_DTYPE_F32, 1, "dtype");
    cr_expect_eq(LK_DTYPE_F64, 2, "dtype");
    cr_expect_eq(LK_DTYPE_I64, 3, "dtype");
    cr_expect_eq(LK_DTYPE_I32, 4, "dtype");
    cr_expect_eq(LK_DTYPE_U8, 5, "dtype");
    cr_expect_eq(LK_DTYPE_BOOL, 6, "dtype");
    cr_expect_eq(LK_DTYPE_BIT(LK_DTYPE_F64), 4u, "dtype bit");
    cr_expect_eq(LK_DTYPES_FLOAT, 0x6u, "float dtypes");
    cr_expect_eq(LK_DTYPES_INT, 0x18u, "int dtypes");

    cr_expect_eq(LK_REDUCTION_NONE, 0, "reduction");
    cr_expect_eq(LK_REDUCTION_MEAN, 1, "reduction");
    cr_expect_eq(LK_REDUCTION_SUM, 2, "reduction");
    cr_expect_eq(LK_REDUCTION_BATCHMEAN, 3, "reduction");
    cr_expect_eq(LK_REDUCTION_BIT(LK_REDUCTION_SUM), 4u, "reduction bit");
    cr_expect_eq(LK_REDUCTION_COUNT, 4, "reduction count");

    cr_expect_eq(LK_LOG_ERROR, 0, "log level");
    cr_expect_eq(LK_LOG_WARN, 1, "log level");
    cr_expect_eq(LK_LOG_INFO, 2, "log level");
    cr_expect_eq(LK_LOG_DEBUG, 3, "log level");

    cr_expect_eq(LK_PARAM_NUMBER, 1, "param type");
    cr_expect_eq(LK_PARAM_INTEGER, 2, "param type");
    cr_expect_eq(LK_PARAM_BOOL, 3, "param type");
    cr_expect_eq(LK_PARAM_CHOICE, 4, "param type");
    cr_expect_eq(LK_PARAM_NUMBER_LIST, 5, "param type");
    cr_expect_eq(LK_PARAM_MIN_EXCLUSIVE, 0x1u, "param flag");
    cr_expect_eq(LK_PARAM_MAX_EXCLUSIVE, 0x2u, "param flag");

    cr_expect_eq(LK_SLOT_OPTIONAL, 0x1u, "slot flag");
    cr_expect_eq(LK_SLOT_DIFFERENTIABLE, 0x2u, "slot flag");
    cr_expect_eq(LK_SHAPE_ANY, 0, "shape rule");
    cr_expect_eq(LK_SHAPE_LIKE_INPUT, 1, "shape rule");
    cr_expect_eq(LK_SHAPE_INPUT_NO_CHANNEL, 2, "shape rule");

    cr_expect_eq(LK_BLOCK_GRAD_ACCUMULATE, 0x1u, "block flag");
    cr_expect_eq(LK_PLAN_STATS_PER_SAMPLE, 0x1u, "plan flag (since 1.4)");
    cr_expect_eq(LK_PLAN_SPLIT_FINISH, 0x2u, "plan flag (since 1.5)");
    cr_expect_eq(LK_LOSS_FUSED, 0x1u, "loss flag");
    cr_expect_eq(LK_LOSS_WHOLE, 0x2u, "loss flag");

    /* Array bounds inside ABI structs: changing one moves members. */
    cr_expect_eq(LK_MAX_NDIM, 16, "LK_MAX_NDIM");
    cr_expect_eq(LK_PLAN_AUX, 8, "LK_PLAN_AUX");
    cr_expect_eq(LK_BLOCK_POSITIONS, 16384, "LK_BLOCK_POSITIONS");
}

/* ------------------------------------------------------------------------ */
/* Layouts: x86-64 LP64, computed by hand                                    */

Test(abi, layout_types_h)
{
    /* lk_tensor: data 0 (8), dtype 8 (4), ndim 12 (4), shape 16 (8),
     * strides 24 (8) = 32. */
    PIN_SIZE(lk_tensor, 32);
    PIN_OFF(lk_tensor, data, 0);
    PIN_OFF(lk_tensor, dtype, 8);
    PIN_OFF(lk_tensor, ndim, 12);
    PIN_OFF(lk_tensor, shape, 16);
    PIN_OFF(lk_tensor, strides, 24);

    /* The enums are passed as int32_t members, but plugins also return
     * lk_status by value: it must stay int-sized. */
    PIN_SIZE(lk_status, 4);
}

Test(abi, layout_msg_and_host)
{
    /* lk_msg: buf 0 (8), cap 8 (8) = 16. */
    PIN_SIZE(lk_msg, 16);
    PIN_OFF(lk_msg, buf, 0);
    PIN_OFF(lk_msg, cap, 8);

    /* lk_host: abi_major 0 (4), abi_minor 4 (4), then six pointers of 8 from
     * 8: ctx 8, log 16, parallel_for 24, scratch_alloc 32, scratch_free 40,
     * thread_count 48 = 56. */
    PIN_SIZE(lk_host, 56);
    PIN_OFF(lk_host, abi_major, 0);
    PIN_OFF(lk_host, abi_minor, 4);
    PIN_OFF(lk_host, ctx, 8);
    PIN_OFF(lk_host, log, 16);
    PIN_OFF(lk_host, parallel_for, 24);
    PIN_OFF(lk_host, scratch_alloc, 32);
    PIN_OFF(lk_host, scratch_free, 40);
    PIN_OFF(lk_host, thread_count, 48);
}

Test(abi, layout_params)
{
    /* lk_param_desc: name 0, doc 8, type 16 (4), flags 20 (4),
     * default_number 24, min 32, max 40, choices 48, default_choice 56,
     * default_list 64 (8 each), default_list_len 72, list_min_len 76,
     * list_max_len 80 (4 each) = 84, padded to 8: 88 (1.1); unset 88 (since
     * 1.2): 96. */
    PIN_SIZE(lk_param_desc, 96);
    PIN_OFF(lk_param_desc, name, 0);
    PIN_OFF(lk_param_desc, doc, 8);
    PIN_OFF(lk_param_desc, type, 16);
    PIN_OFF(lk_param_desc, flags, 20);
    PIN_OFF(lk_param_desc, default_number, 24);
    PIN_OFF(lk_param_desc, min, 32);
    PIN_OFF(lk_param_desc, max, 40);
    PIN_OFF(lk_param_desc, choices, 48);
    PIN_OFF(lk_param_desc, default_choice, 56);
    PIN_OFF(lk_param_desc, default_list, 64);
    PIN_OFF(lk_param_desc, default_list_len, 72);
    PIN_OFF(lk_param_desc, list_min_len, 76);
    PIN_OFF(lk_param_desc, list_max_len, 80);
    PIN_OFF(lk_param_desc, unset, 88);

    /* lk_param_value: number 0, integer 8, choice 16, list 24, list_len 32
     * (8 each), is_set 40 (4) = 44, padded to 8: 48. The host builds an
     * array of these, so its size is ABI even though it never grows. */
    PIN_SIZE(lk_param_value, 48);
    PIN_OFF(lk_param_value, number, 0);
    PIN_OFF(lk_param_value, integer, 8);
    PIN_OFF(lk_param_value, choice, 16);
    PIN_OFF(lk_param_value, list, 24);
    PIN_OFF(lk_param_value, list_len, 32);
    PIN_OFF(lk_param_value, is_set, 40);
}

Test(abi, layout_slots)
{
    /* lk_slot_desc: name 0, doc 8, dtypes 16 (4), flags 20 (4), shape 24 (4),
     * values 28 (4, since 1.1, in what was padding) = 32; ndims 32 (4,
     * since 1.3) = 36; batch 36 (4, since 1.6, in what was padding),
     * batch_views 40 (4, since 1.6) = 44, padded to 8: 48. */
    PIN_SIZE(lk_slot_desc, 48);
    PIN_OFF(lk_slot_desc, name, 0);
    PIN_OFF(lk_slot_desc, doc, 8);
    PIN_OFF(lk_slot_desc, dtypes, 16);
    PIN_OFF(lk_slot_desc, flags, 20);
    PIN_OFF(lk_slot_desc, shape, 24);
    PIN_OFF(lk_slot_desc, values, 28);
    PIN_OFF(lk_slot_desc, ndims, 32);
    PIN_OFF(lk_slot_desc, batch, 36);
    PIN_OFF(lk_slot_desc, batch_views, 40);
    /* the batch: dim d + 1, 0 undeclared; the flag beside the older two */
    cr_expect_eq(LK_BATCH_UNDECLARED, 0);
    cr_expect_eq(LK_BATCH_DIM(0), 1);
    cr_expect_eq(LK_BATCH_DIM(2), 3);
    cr_expect_eq(LK_MAX_BATCH_VIEWS, 64);
    cr_expect_eq(LK_SLOT_PADDED, 0x4u);
    /* the masks: bit d for d dimensions, d = 0 ..= 16 */
    cr_expect_eq(LK_NDIM_BIT(2), 0x4u);
    cr_expect_eq(LK_NDIM_ANY, 0x1ffffu);
    cr_expect_eq(LK_NDIM_FROM(3), 0x1fff8u);
}

Test(abi, layout_plan_and_block)
{
    /* lk_plan: n_positions 0, block_positions 8 (8 each), n_stats 16 (4),
     * out_ndim 20 (4), out_shape 24 (16 * 8 = 128, to 152), mean_norm 152,
     * aux 160 (8 * 8, to 224), auxf 224 (8 * 8, to 288), flags 288 (4,
     * since 1.4), n_partials 292 (4, since 1.5) = 296. */
    PIN_SIZE(lk_plan, 296);
    PIN_OFF(lk_plan, n_positions, 0);
    PIN_OFF(lk_plan, block_positions, 8);
    PIN_OFF(lk_plan, n_stats, 16);
    PIN_OFF(lk_plan, out_ndim, 20);
    PIN_OFF(lk_plan, out_shape, 24);
    PIN_OFF(lk_plan, mean_norm, 152);
    PIN_OFF(lk_plan, aux, 160);
    PIN_OFF(lk_plan, auxf, 224);
    PIN_OFF(lk_plan, flags, 288);
    PIN_OFF(lk_plan, n_partials, 292);

    /* lk_block: begin 0, end 8, slots 16, grads 24, out 32, stats 40,
     * global 48, grad_scale 56 (8 each), reduction 64 (4), flags 68 (4) = 72. */
    PIN_SIZE(lk_block, 72);
    PIN_OFF(lk_block, begin, 0);
    PIN_OFF(lk_block, end, 8);
    PIN_OFF(lk_block, slots, 16);
    PIN_OFF(lk_block, grads, 24);
    PIN_OFF(lk_block, out, 32);
    PIN_OFF(lk_block, stats, 40);
    PIN_OFF(lk_block, global, 48);
    PIN_OFF(lk_block, grad_scale, 56);
    PIN_OFF(lk_block, reduction, 64);
    PIN_OFF(lk_block, flags, 68);
}

Test(abi, layout_call_args)
{
    /* lk_create_args: host 0, desc 8, params 16 (8 each), n_params 24 (4)
     * = 28, padded to 8: 32. */
    PIN_SIZE(lk_create_args, 32);
    PIN_OFF(lk_create_args, host, 0);
    PIN_OFF(lk_create_args, desc, 8);
    PIN_OFF(lk_create_args, params, 16);
    PIN_OFF(lk_create_args, n_params, 24);

    /* lk_whole_args: slots 0, grads 8, out 16, grad_scale 24 (8 each),
     * reduction 32 (4), flags 36 (4) = 40. */
    PIN_SIZE(lk_whole_args, 40);
    PIN_OFF(lk_whole_args, slots, 0);
    PIN_OFF(lk_whole_args, grads, 8);
    PIN_OFF(lk_whole_args, out, 16);
    PIN_OFF(lk_whole_args, grad_scale, 24);
    PIN_OFF(lk_whole_args, reduction, 32);
    PIN_OFF(lk_whole_args, flags, 36);
}

Test(abi, layout_loss_desc)
{
    /* lk_loss_desc: id 0, summary 8, version 16, params 24, slots 32 (8
     * each), reductions 40 (4), default_reduction 44 (4), flags 48 (4),
     * 4 bytes of padding, then seven function pointers of 8 from 56:
     * create 56, destroy 64, plan 72, forward 80, finalize 88, backward 96,
     * whole 104, then example 112 (since 1.1), partials 120 (since 1.5)
     * = 128. */
    PIN_SIZE(lk_loss_desc, 128);
    PIN_OFF(lk_loss_desc, id, 0);
    PIN_OFF(lk_loss_desc, summary, 8);
    PIN_OFF(lk_loss_desc, version, 16);
    PIN_OFF(lk_loss_desc, params, 24);
    PIN_OFF(lk_loss_desc, slots, 32);
    PIN_OFF(lk_loss_desc, reductions, 40);
    PIN_OFF(lk_loss_desc, default_reduction, 44);
    PIN_OFF(lk_loss_desc, flags, 48);
    PIN_OFF(lk_loss_desc, create, 56);
    PIN_OFF(lk_loss_desc, destroy, 64);
    PIN_OFF(lk_loss_desc, plan, 72);
    PIN_OFF(lk_loss_desc, forward, 80);
    PIN_OFF(lk_loss_desc, finalize, 88);
    PIN_OFF(lk_loss_desc, backward, 96);
    PIN_OFF(lk_loss_desc, whole, 104);
    PIN_OFF(lk_loss_desc, example, 112);
    PIN_OFF(lk_loss_desc, partials, 120);
}

Test(abi, layout_plugin)
{
    /* lk_plugin: abi_major 0 (4), abi_minor 4 (4), name 8, version 16,
     * summary 24, losses 32 (8 each) = 40. The two versions must stay first:
     * the host reads them before anything else (docs/design.md). */
    PIN_SIZE(lk_plugin, 40);
    PIN_OFF(lk_plugin, abi_major, 0);
    PIN_OFF(lk_plugin, abi_minor, 4);
    PIN_OFF(lk_plugin, name, 8);
    PIN_OFF(lk_plugin, version, 16);
    PIN_OFF(lk_plugin, summary, 24);
    PIN_OFF(lk_plugin, losses, 32);
}

/* ------------------------------------------------------------------------ */
/* Function-pointer signatures                                               */

/* What each callback's type is today. Sizes and offsets cannot see a changed
 * parameter list; these can. */
typedef const lk_plugin *(*sig_entry)(uint32_t, uint32_t);
typedef lk_status (*sig_range)(void *, int64_t, int64_t);
typedef void (*sig_log)(void *, int32_t, const char *);
typedef lk_status (*sig_parallel_for)(void *, int64_t, int64_t, lk_range_fn, void *);
typedef void *(*sig_scratch_alloc)(void *, size_t);
typedef void (*sig_scratch_free)(void *, void *);
typedef int32_t (*sig_thread_count)(void *);
typedef lk_status (*sig_create)(const lk_create_args *, void **, lk_msg *);
typedef void (*sig_destroy)(void *);
typedef lk_status (*sig_plan)(const void *, const lk_tensor *, int32_t, lk_plan *, lk_msg *);
typedef lk_status (*sig_block)(const void *, const lk_plan *, const lk_block *, lk_msg *);
typedef lk_status (*sig_finalize)(const void *, const lk_plan *, const double *, int32_t,
                                  double *, lk_msg *);
typedef lk_status (*sig_whole)(const void *, const lk_plan *, const lk_whole_args *, double *,
                               lk_msg *);
typedef lk_status (*sig_example)(const void *, int32_t, int32_t, uint64_t, lk_tensor *, lk_msg *);
typedef lk_status (*sig_partials)(const void *, const lk_plan *, const double *, double *,
                                  lk_msg *);

#define SAME_TYPE(expr, T) _Generic((expr), T: 1, default: 0)
#define PIN_SIG(expr, T) cr_expect(SAME_TYPE(expr, T), #expr " is no longer a " #T)

Test(abi, signatures)
{
    const lk_host *h = NULL;
    const lk_loss_desc *d = NULL;
    /* _Generic does not evaluate its operand: the NULL pointers are never
     * dereferenced. */
    PIN_SIG((lk_plugin_entry_fn)0, sig_entry);
    PIN_SIG((lk_range_fn)0, sig_range);
    PIN_SIG(h->log, sig_log);
    PIN_SIG(h->parallel_for, sig_parallel_for);
    PIN_SIG(h->scratch_alloc, sig_scratch_alloc);
    PIN_SIG(h->scratch_free, sig_scratch_free);
    PIN_SIG(h->thread_count, sig_thread_count);
    PIN_SIG(d->create, sig_create);
    PIN_SIG(d->destroy, sig_destroy);
    PIN_SIG(d->plan, sig_plan);
    PIN_SIG(d->forward, sig_block);
    PIN_SIG(d->finalize, sig_finalize);
    PIN_SIG(d->backward, sig_block);
    PIN_SIG(d->whole, sig_whole);
    PIN_SIG(d->example, sig_example);
    PIN_SIG(d->partials, sig_partials);
}

/* ------------------------------------------------------------------------ */
/* Exported symbols                                                          */

#define MAX_SO 64

typedef struct so_list {
    char path[MAX_SO][1024];
    size_t n;
} so_list;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Adds dir's *.so files, except one named skip (may be NULL). */
static void add_shared_objects(so_list *l, const char *dir, const char *skip)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".so") || (skip && strcmp(e->d_name, skip) == 0))
            continue;
        cr_assert_lt(l->n, (size_t)MAX_SO, "too many plugins for the test's table");
        snprintf(l->path[l->n++], sizeof l->path[0], "%s/%s", dir, e->d_name);
    }
    closedir(d);
}

/* The defined dynamic symbols of a shared object, one name per line. */
static void dynamic_symbols(const char *path, char *out, size_t cap)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen(%s) failed", cmd);
    char line[512];
    size_t len = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, p)) {
        /* "0000000000001120 T losskit_plugin_entry": the name is the last
         * field. */
        line[strcspn(line, "\n")] = '\0';
        const char *name = strrchr(line, ' ');
        name = name ? name + 1 : line;
        int w = snprintf(out + len, cap - len, "%s\n", name);
        if (w > 0 && (size_t)w < cap - len)
            len += (size_t)w;
    }
    int rc = pclose(p);
    cr_assert_eq(rc, 0, "`%s` failed (%d): %s", cmd, rc, out);
}

Test(abi, plugins_export_only_the_entry)
{
    static so_list l;
    l.n = 0;
    /* Every family's .so in plugins/, then every fixture but the one whose
     * point is a missing entry. */
    const char *families = LK_BUILD_ROOT "/plugins";
    add_shared_objects(&l, families, NULL);
    size_t n_families = l.n;
    add_shared_objects(&l, LK_FIXTURE_DIR, "fx_missing_entry.so");

    /* Guard against passing on an empty or half-built tree. */
    int has_tutorial = 0, has_good = 0;
    for (size_t i = 0; i < l.n; i++) {
        has_tutorial |= ends_with(l.path[i], "/plugins/tutorial.so");
        has_good |= ends_with(l.path[i], "/fx_good.so");
    }
    cr_assert(has_tutorial, "tutorial.so not found under %s", families);
    cr_assert(has_good, "fx_good.so not found in %s", LK_FIXTURE_DIR);
    cr_assert_geq(n_families, 1, "no family plugin found");
    cr_assert_geq(l.n - n_families, 8, "only %zu fixtures found", l.n - n_families);

    for (size_t i = 0; i < l.n; i++) {
        char syms[4096];
        dynamic_symbols(l.path[i], syms, sizeof syms);
        cr_expect_str_eq(syms, "losskit_plugin_entry\n",
                         "%s must export only losskit_plugin_entry; it exports:\n%s", l.path[i],
                         syms);
    }
}

Test(abi, missing_entry_fixture_is_what_it_claims)
{
    /* The registry test relies on this fixture lacking the entry while still
     * being a loadable shared object with an export. */
    char syms[4096];
    dynamic_symbols(LK_FIXTURE_DIR "/fx_missing_entry.so", syms, sizeof syms);
    cr_expect_null(strstr(syms, "losskit_plugin_entry\n"), "it exports the entry:\n%s", syms);
    cr_expect_not_null(strstr(syms, "losskit_plugin_entri\n"), "it exports:\n%s", syms);
}

/* ------------------------------------------------------------------------ */
/* Headers compile alone                                                     */

#define SDK_INC LK_SOURCE_ROOT "/sdk/include"
#define HOST_INC LK_SOURCE_ROOT "/host/include"
#define WARN "-Wall -Wextra -Wpedantic -Werror -Wshadow"

/* Compiles tests/abi/<file> with LK_HEADER = <losskit/header>; returns the
 * exit status and leaves the compiler's output in log. */
static int compile_header(const char *compiler, const char *std, const char *extra_warn,
                          const char *includes, const char *header, const char *file,
                          char *log, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s -std=%s " WARN " %s -fsyntax-only %s '-DLK_HEADER=<losskit/%s>' "
             "'" LK_SOURCE_ROOT "/tests/abi/%s' 2>&1",
             compiler, std, extra_warn, includes, header, file);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen(%s) failed", cmd);
    size_t len = fread(log, 1, cap - 1, p);
    log[len] = '\0';
    return pclose(p);
}

typedef struct header_case {
    const char *header;
    const char *includes; /* sdk headers must not need host/include */
} header_case;

static const header_case headers[] = {
    {"types.h", "-I'" SDK_INC "'"},
    {"plugin.h", "-I'" SDK_INC "'"},
    {"kernel.h", "-I'" SDK_INC "'"},
    {"losskit.h", "-I'" SDK_INC "' -I'" HOST_INC "'"},
    {"lanes.h", "-I'" SDK_INC "'"},
    {"loss.h", "-I'" SDK_INC "'"},
    {"loss.h", "-I'" SDK_INC "' -DLK_LANES_F32"},
#if defined(__x86_64__)
    /* the kernel layer as each SIMD variant compiles it */
    {"loss.h", "-I'" SDK_INC "' -mavx2 -mfma"},
    {"loss.h", "-I'" SDK_INC "' -mavx2 -mfma -DLK_LANES_F32"},
    {"loss.h", "-I'" SDK_INC "' -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma"},
    {"loss.h",
     "-I'" SDK_INC "' -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -DLK_LANES_F32"},
#endif
};

Test(abi, headers_compile_alone_as_c)
{
    static const char *const stds[] = {"c11", "c17"};
    char log[8192];
    for (size_t h = 0; h < sizeof headers / sizeof headers[0]; h++)
        for (size_t s = 0; s < 2; s++)
            cr_expect_eq(compile_header("cc", stds[s], "-Wstrict-prototypes -Wmissing-prototypes",
                                        headers[h].includes, headers[h].header,
                                        "header_c11.c", log, sizeof log),
                         0, "%s does not compile alone as %s:\n%s", headers[h].header, stds[s],
                         log);
}

Test(abi, headers_compile_alone_as_cxx)
{
    static const char *const stds[] = {"c++11", "c++17"};
    char log[8192];
    for (size_t h = 0; h < sizeof headers / sizeof headers[0]; h++)
        for (size_t s = 0; s < 2; s++)
            cr_expect_eq(compile_header("c++", stds[s], "", headers[h].includes,
                                        headers[h].header, "header_cxx.cpp", log, sizeof log),
                         0, "%s does not compile alone as %s:\n%s", headers[h].header, stds[s],
                         log);
}

Test(abi, header_check_can_fail)
{
    /* The harness itself must be able to fail: a header that does not exist
     * must not compile. */
    char log[8192];
    cr_expect_neq(compile_header("cc", "c11", "", "-I'" SDK_INC "'", "no_such_header.h",
                                 "header_c11.c", log, sizeof log),
                  0, "compiling a missing header succeeded");
}
