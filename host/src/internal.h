/* internal.h: what the runtime's files share and nobody else sees. */
#ifndef LOSSKIT_INTERNAL_H
#define LOSSKIT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "losskit/kernel.h" /* lk_shape_str, lk_sdk_dtype_name: written once, in the SDK */
#include "losskit/losskit.h"

#if defined(__GNUC__)
#define LK__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LK__PRINTF(a, b)
#endif

/* The most tensor slots one loss may declare. */
#define LK__MAX_SLOTS 16

/* util.c */
/* Every message is one line that cannot drive a terminal: lk__err formats
 * into errmsg (LK_ERRMSG_CAP bytes) and then escapes what came from configs,
 * file names, arguments and plugins with lk__escape. */
LK__PRINTF(3, 4) lk_status lk__err(char *errmsg, lk_status st, const char *fmt, ...);
/* Copies src into dst (cap > 0 bytes, always terminated) with every control
 * character written as an escape: newline \n, carriage return \r, tab \t,
 * any other byte below 0x20 and 0x7f as \xHH (ESC is \x1b), and the C1
 * controls: a byte 0x80-0x9f that is not part of well-formed UTF-8 as \xHH,
 * U+0080-U+009F (c2 80-c2 9f) as \xc2\xHH. Well-formed UTF-8 is copied.
 * The copy is cut between escapes or characters when it does not fit (at
 * most 4 bytes a byte of src); returns its length. */
size_t lk__escape(char *dst, size_t cap, const char *src);
char *lk__strdup(const char *s);
/* Opens path read-only if it is a regular file, without ever blocking (a
 * FIFO is refused, not waited on); *size (may be NULL) gets its size.
 * Returns the descriptor (close-on-exec), or -1 with why (cap bytes) saying
 * why: the open error, "Is a directory", or "not a regular file (it is a
 * FIFO)". */
int lk__open_regular(const char *path, int64_t *size, char *why, size_t cap);
/* "a FIFO", "a directory", ...: what a st_mode is, for messages. */
const char *lk__file_kind(unsigned mode);
size_t lk__levenshtein(const char *a, const char *b);
/* Appends ", " separated names to buf (cap bytes), returning buf. */
int64_t lk__numel(int32_t ndim, const int64_t *shape);

/* pool.c: a fixed-size pool; chunking never depends on the thread count. */
typedef struct lk__pool lk__pool;
lk_status lk__pool_create(int32_t threads, lk__pool **out);
void lk__pool_destroy(lk__pool *pool);
int32_t lk__pool_threads(const lk__pool *pool);
lk_status lk__pool_for(lk__pool *pool, int64_t n, int64_t grain, lk_range_fn fn, void *arg);

/* registry.c */
typedef struct lk__module {
    char *path;
    void *handle;
    const lk_plugin *plugin;
} lk__module;

typedef struct lk__entry {
    const lk_loss_desc *desc;
    const lk__module *module;
    const lk_param_desc **params; /* n_params pointers, owned */
    uint32_t n_params;
    const lk_slot_desc **slots; /* n_slots pointers, owned */
    uint32_t n_slots;
    int32_t shadowed;
    size_t winner; /* index of the entry that serves this id */
} lk__entry;

typedef struct lk__registry {
    lk__module **modules;
    size_t n_modules;
    lk__entry *entries;
    size_t n_entries;
    char **diags;
    size_t n_diags;
} lk__registry;

void lk__registry_load(lk__registry *reg, const char *path_list);
void lk__registry_free(lk__registry *reg);
const lk__entry *lk__registry_find(const lk__registry *reg, const char *id);
/* "did you mean" text for an unknown id into buf. */
void lk__registry_suggest(const lk__registry *reg, const char *id, char *buf, size_t cap);
const char *lk__default_plugin_path(void);
/* The checks a loaded plugin's descriptors go through, on pl as given (no
 * file, no dlopen): 1 when it would register, with its entries added to reg
 * (their module NULL), else 0 with one diagnostic in reg. Free reg with
 * lk__registry_free. For the descriptor fuzz target (tests/fuzz); not part
 * of the library's exported ABI. */
int lk__registry_check_plugin(lk__registry *reg, const lk_plugin *pl);

/* runtime.c */
struct lk_runtime {
    lk__registry reg;
    lk__pool *pool;
    lk_host host;
    int32_t threads;
    size_t refs; /* 1 for the open handle + 1 per live lk_loss (atomic) */
};
void lk__runtime_release(lk_runtime *rt);
void lk__fill_info(const lk__registry *reg, const lk__entry *e, lk_loss_info *out);

/* config.c / loss objects */
typedef struct lk__term {
    const lk__entry *entry;
    void *instance;
    double weight;
} lk__term;

typedef struct lk__slot {
    const lk_slot_desc *desc;
    int32_t values; /* resolved lk_slot_values, from the first declaring term */
    int32_t required;
    int32_t differentiable;
} lk__slot;

struct lk_loss {
    lk_runtime *rt;
    lk__term *terms;
    size_t n_terms;
    int32_t reduction;
    int32_t is_sum; /* the config used "terms", even with one term */
    char *name;
    lk__slot *slots;
    size_t n_slots;
};


#endif
