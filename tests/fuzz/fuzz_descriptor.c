/* The host's checks of a plugin's descriptors (lk__validate_plugin, the
 * code every plugin's scan goes through in scan.c) on a plugin
 * built from the bytes: one to four losses, each with an id, summary and
 * version (or NULL), up to 300 parameters and 20 slots drawn from a small
 * pool of names, any types, flags, ranges, defaults (NaN and infinities
 * included), choice and list defaults, reductions and functions present or
 * not. Nothing may crash; a refused plugin has one reason, a clean line
 * once escaped as every diagnostic is. */
#include <math.h>
#include <stdio.h>

#include "fuzz_common.h"
#include "internal.h"
#include "scan.h"
#include "losskit/plugin.h"

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned byte(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static uint32_t u32(reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | byte(r);
    return v;
}

static double number(reader *r)
{
    static const double special[] = {
        0.0, 1.0, -1.0, 0.5, 1e300, -1e300, 9.3e18, -9.3e18, 9007199254740993.0};
    unsigned k = byte(r);
    switch (k % 8) {
    case 0: return NAN;
    case 1: return HUGE_VAL;
    case 2: return -HUGE_VAL;
    case 3: return special[byte(r) % (sizeof special / sizeof special[0])];
    case 4: {
        uint64_t bits = (uint64_t)u32(r) << 32 | u32(r);
        double d;
        memcpy(&d, &bits, sizeof d);
        return d;
    }
    default: return (double)(int8_t)byte(r);
    }
}

/* Strings: names that pass, names that do not, and raw bytes. */
static char strings[64][80];
static size_t n_strings;

static const char *string(reader *r)
{
    static const char *const pool[] = {"input", "target", "weight", "alpha",   "mode", "p0",   "p1",
                                       "",      "Bad",    "a-b",    "x\n\x1b", "mse",  "focal"};
    unsigned k = byte(r);
    if (k < 16)
        return NULL;
    if (k < 200)
        return pool[k % (sizeof pool / sizeof pool[0])];
    if (n_strings == 64)
        return pool[0];
    char *s = strings[n_strings++];
    size_t len = k == 255 ? 79 : byte(r) % 80; /* 65 to 79: past LK_MAX_ID_LEN */
    for (size_t i = 0; i < len; i++) {
        unsigned c = byte(r);
        s[i] = (char)(c % 2 ? 'a' + c % 26 : c ? c : '_');
    }
    s[len] = '\0';
    return s;
}

static lk_status fn_create(const lk_create_args *a, void **inst, lk_msg *m)
{
    return LK_OK;
}
static void fn_destroy(void *inst)
{
}
static lk_status fn_plan(const void *i, const lk_tensor *s, int32_t r, lk_plan *p, lk_msg *m)
{
    return LK_OK;
}
static lk_status fn_block(const void *i, const lk_plan *p, const lk_block *b, lk_msg *m)
{
    return LK_OK;
}
static lk_status fn_finalize(const void *i, const lk_plan *p, const double *s, int32_t r, double *v,
                             lk_msg *m)
{
    return LK_OK;
}
static lk_status fn_whole(const void *i, const lk_plan *p, const lk_whole_args *a, double *v,
                          lk_msg *m)
{
    return LK_OK;
}

#define MAX_LOSSES 4
#define MAX_PARAMS 300
#define MAX_SLOTS  20

static lk_param_desc params[MAX_LOSSES][MAX_PARAMS];
static const lk_param_desc *param_ptrs[MAX_LOSSES][MAX_PARAMS + 1];
static lk_slot_desc slots[MAX_LOSSES][MAX_SLOTS];
static const lk_slot_desc *slot_ptrs[MAX_LOSSES][MAX_SLOTS + 1];
static const char *choices[MAX_LOSSES][MAX_PARAMS][5];
static double lists[MAX_LOSSES][MAX_PARAMS][4];
static lk_loss_desc losses[MAX_LOSSES];
static const lk_loss_desc *loss_ptrs[MAX_LOSSES + 1];

static void make_param(reader *r, lk_param_desc *p, const char **ch, double *list)
{
    memset(p, 0, sizeof *p);
    p->name = string(r);
    p->doc = byte(r) % 16 ? "doc" : NULL;
    p->type = (int32_t)(byte(r) % 7);
    p->flags = byte(r) % 5;
    p->default_number = number(r);
    p->min = byte(r) % 2 ? -HUGE_VAL : number(r);
    p->max = byte(r) % 2 ? HUGE_VAL : number(r);
    unsigned nc = byte(r) % 5;
    for (unsigned i = 0; i < nc; i++)
        ch[i] = string(r);
    ch[nc] = NULL;
    p->choices = byte(r) % 8 ? ch : NULL;
    p->default_choice = string(r);
    unsigned nl = byte(r) % 5;
    for (unsigned i = 0; i < nl && i < 4; i++)
        list[i] = number(r);
    p->default_list = byte(r) % 4 ? list : NULL;
    p->default_list_len = (int32_t)(int8_t)byte(r) % 6;
    p->list_min_len = (int32_t)(int8_t)byte(r) % 6;
    p->list_max_len = (int32_t)(int8_t)byte(r) % 8;
    p->unset = string(r); /* read by the host from plugins of 1.2 on */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    n_strings = 0;
    unsigned n_losses = 1 + byte(&r) % MAX_LOSSES;
    for (unsigned l = 0; l < n_losses; l++) {
        lk_loss_desc *d = &losses[l];
        memset(d, 0, sizeof *d);
        d->id = string(&r);
        d->summary = byte(&r) % 16 ? "summary" : NULL;
        d->version = byte(&r) % 16 ? "1.0.0" : NULL;
        unsigned np = byte(&r);
        np = np < 240 ? np % 8 : np == 255 ? MAX_PARAMS : 250 + np % 10; /* near 256 */
        for (unsigned i = 0; i < np; i++) {
            make_param(&r, &params[l][i], choices[l][i], lists[l][i]);
            param_ptrs[l][i] = &params[l][i];
        }
        param_ptrs[l][np] = NULL;
        d->params = np || byte(&r) % 2 ? param_ptrs[l] : NULL;
        unsigned ns = byte(&r) % (MAX_SLOTS + 1);
        for (unsigned i = 0; i < ns; i++) {
            lk_slot_desc *s = &slots[l][i];
            s->name = string(&r);
            s->doc = byte(&r) % 16 ? "doc" : NULL;
            s->dtypes = u32(&r);
            s->flags = byte(&r) % 8;
            s->shape = (int32_t)(int8_t)byte(&r) % 5;
            s->values = (int32_t)(int8_t)byte(&r) % 10;
            s->ndims = u32(&r) >> (byte(&r) % 32); /* past LK_MAX_NDIM's bits or not */
            slot_ptrs[l][i] = s;
        }
        slot_ptrs[l][ns] = NULL;
        d->slots = ns || byte(&r) % 2 ? slot_ptrs[l] : NULL;
        d->reductions = byte(&r) % 32;
        d->default_reduction = (int32_t)(int8_t)byte(&r) % 6;
        d->flags = byte(&r) % 16;
        unsigned fns = byte(&r);
        d->create = fns & 1 ? fn_create : NULL;
        d->destroy = fns & 2 ? fn_destroy : NULL;
        d->plan = fns & 4 ? fn_plan : NULL;
        d->forward = fns & 8 ? fn_block : NULL;
        d->finalize = fns & 16 ? fn_finalize : NULL;
        d->backward = fns & 32 ? fn_block : NULL;
        d->whole = fns & 64 ? fn_whole : NULL;
        loss_ptrs[l] = d;
    }
    loss_ptrs[n_losses] = NULL;
    lk_plugin pl;
    memset(&pl, 0, sizeof pl);
    pl.abi_major = LK_ABI_MAJOR;
    pl.abi_minor = byte(&r) % 5; /* 1.0 to 1.4: older, today's and newer */
    pl.name = byte(&r) % 16 ? "fuzz" : NULL;
    pl.version = byte(&r) % 16 ? "1.0.0" : NULL;
    pl.summary = "fuzzed";
    pl.losses = loss_ptrs;
    char why[1024];
    const char *bad = lk__validate_plugin(&pl, why, sizeof why);
    if (bad) {
        if (getenv("LK_FUZZ_VERBOSE")) /* what a replay was refused for */
            fprintf(stderr, "  %s\n", bad);
        FUZZ_REQUIRE(bad[0] != '\0');
        /* the reason reaches a diagnostic escaped, as registry.c and
         * scanjobs.c add it */
        static char safe[4 * sizeof why + 1];
        lk__escape(safe, sizeof safe, bad);
        fuzz_check_message(safe);
    }
    return 0;
}
