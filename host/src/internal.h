/* internal.h: what the runtime's files share and nobody else sees. */
#ifndef LOSSKIT_INTERNAL_H
#define LOSSKIT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct stat;

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
 * any other byte below 0x20 and 0x7f as \xHH (ESC is \x1b). The copy is
 * cut between escapes when it does not fit; returns its length. */
size_t lk__escape(char *dst, size_t cap, const char *src);
/* A file name as messages show it: escaped as lk__escape does, and when
 * that is longer than LK__PATH_SHOWN bytes, its middle left out
 * ("/data/runs/.../run_10/input.npy": the start up to a '/', "...", and
 * the last components). A message of LK_ERRMSG_CAP bytes then always has
 * room for the item and the problem after the path. buf holds
 * LK__PATH_BUF bytes; returns buf. */
#define LK__PATH_SHOWN 200
#define LK__PATH_BUF   (LK__PATH_SHOWN + 1)
const char *lk__short_path(char *buf, const char *path);
char *lk__strdup(const char *s);
/* v in the fewest significant digits (6 to 17, %g) that read back as v:
 * 0.05, not 0.050000000000000003; inf and -inf as such. */
void lk__fmt_double(char *buf, size_t cap, double v);
/* A nonzero mask of LK_NDIM_BIT() in words: "2", "1 or 2", "0, 1 or 2",
 * "3 or more" (every count from 3 to LK_MAX_NDIM; "0 or more" for all). */
void lk__ndims_str(char *buf, size_t cap, uint32_t ndims);
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
    const lk_plugin *plugin; /* as the scan found it: host memory, stubbed functions */
    char *record;            /* the scan's record (scan.h), compared at load */
    size_t record_len;
    struct lk__arena *arena; /* holds plugin */
    size_t first_entry;      /* its losses are entries [first_entry, + n_losses) */
    size_t n_losses;
    /* Loaded into this process only when one of its losses is built: */
    void *handle;
    const lk_plugin *loaded; /* the plugin's own descriptor */
    int32_t load_state;      /* 0 not tried, 1 loaded, -1 refused (load_error) */
    char *load_error;
} lk__module;

typedef struct lk__entry {
    const lk_loss_desc *desc; /* as scanned: what lookups, configs and lk_loss_info see */
    const lk_loss_desc *impl; /* the plugin's own, once its module is loaded: what runs */
    const lk__module *module;
    const lk_param_desc *const *params; /* n_params, desc's own array */
    uint32_t n_params;
    const lk_slot_desc *const *slots; /* n_slots */
    uint32_t n_slots;
    int32_t shadowed;
    size_t winner; /* index of the entry that serves this id */
} lk__entry;

/* One file of the search path on its way through the scan (scanjobs.c). */
#define LK__SCAN_KEY_N 7 /* size, mtime s/ns, ctime s/ns, inode, device */
enum {
    LK__ITEM_NONE = 0,
    LK__ITEM_OK,      /* payload: the record */
    LK__ITEM_REFUSED, /* payload: why, a property of the file (cached) */
    LK__ITEM_FAILED   /* payload: why, not cached (a deadline, dlopen, the scanner) */
};
typedef struct lk__scan_item {
    char *path;
    char *diag; /* refused before any scan: the whole diagnostic line */
    int64_t key[LK__SCAN_KEY_N];
    int kind;
    char *payload;
    size_t payload_len;
    int from_cache;
} lk__scan_item;

typedef struct lk__registry {
    lk__module **modules;
    size_t n_modules;
    lk__entry *entries;
    size_t n_entries;
    char **diags;
    size_t n_diags;
    lk__scan_item *pending; /* collected by lk__registry_load, scanned by _finish */
    size_t n_pending;
    void *load_lock; /* a pthread_mutex_t: loading modules on first use */
} lk__registry;

/* Collects the files of a search path; lk__registry_finish scans them all
 * (in parallel, through the cache) and registers them in path order. */
void lk__registry_load(lk__registry *reg, const char *path_list);
void lk__registry_finish(lk__registry *reg);
void lk__registry_free(lk__registry *reg);
const lk__entry *lk__registry_find(const lk__registry *reg, const char *id);
/* "did you mean" text for an unknown id into buf. */
void lk__registry_suggest(const lk__registry *reg, const char *id, char *buf, size_t cap);
const char *lk__default_plugin_path(void);
/* Loads e's plugin into this process if it is not yet (e->impl is set
 * after LK_OK); LK_ERR_LOAD with one line in errmsg (LK_ERRMSG_CAP bytes,
 * not yet escaped) when it cannot be loaded or no longer offers what its
 * scan found. [any-thread] */
lk_status lk__registry_use(lk__registry *reg, const lk__entry *e, char *errmsg);

/* scanjobs.c */
void lk__scan_key_of(lk__scan_item *it, const struct stat *st);
/* Fills kind and payload of every item without a diag: from the cache, or
 * by running scanners. */
void lk__scan_items(lk__scan_item *items, size_t n);
/* Drops path's entry from the cache: its plugin did not offer, once
 * loaded, what the entry said. */
void lk__scan_forget(const char *path);

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
    /* The call tensor each slot reads: the config's "tensors" binding
     * (owned), or NULL when the slot reads the tensor of its own name. */
    char *bound[LK__MAX_SLOTS];
} lk__term;

/* The name of the call tensor slot s of a term reads. */
static inline const char *lk__term_tensor(const lk__term *t, uint32_t s)
{
    return t->bound[s] ? t->bound[s] : t->entry->slots[s]->name;
}

/* One tensor of a configured loss: a call tensor name, read by one or more
 * slots of its terms. */
typedef struct lk__slot {
    const lk_slot_desc *desc; /* -> named: the first declaring slot, under the tensor's name */
    lk_slot_desc named;
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
