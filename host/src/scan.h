/* scan.h: what the plugin scanner (losskit-scan) and the runtime share: the
 * checks a plugin must pass, and the text form in which the scanner hands a
 * plugin's descriptors back to the runtime and the runtime keeps them in its
 * cache. Both sides compile scan.c; nothing here is part of the API. */
#ifndef LOSSKIT_SCAN_H
#define LOSSKIT_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "losskit/plugin.h"

/* The version of the record format and of the scanner's protocol: a cache
 * or a scanner that speaks another is ignored. */
#define LK__SCAN_FORMAT 4

/* What the scanner answers on descriptor 3, first line. */
#define LK__SCAN_OK      "OK"      /* then the record */
#define LK__SCAN_REFUSED "REFUSED" /* then one line: why (a property of the file) */
#define LK__SCAN_NOLOAD                                                                            \
    "NOLOAD" /* then one line: dlopen failed (may depend on the                                    \
                environment: not cached) */

/* A growing byte buffer; oom is set (and further writes dropped) when an
 * allocation fails. */
typedef struct lk__buf {
    char *p;
    size_t len, cap;
    int oom;
} lk__buf;
void lk__buf_add(lk__buf *b, const void *data, size_t n);
void lk__buf_printf(lk__buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void lk__buf_str(lk__buf *b, const char *s); /* "LEN:BYTES " or "- " for NULL */
void lk__buf_free(lk__buf *b);

/* Allocations freed all at once: the descriptors rebuilt from a record. */
typedef struct lk__arena {
    struct lk__chunk *head;
} lk__arena;
void *lk__arena_alloc(lk__arena *a, size_t n); /* zeroed, 16-byte aligned; NULL when out */
void lk__arena_free(lk__arena *a);

/* Checks a plugin's descriptors as the loader always has (ABI major aside).
 * Returns NULL when they pass, else the problem, one line without the file
 * name ("loss 'x': its id ...; plugin refused"), in why (cap bytes). */
const char *lk__validate_plugin(const lk_plugin *pl, char *why, size_t cap);

/* Appends the record of a plugin that passed lk__validate_plugin: every
 * member the host reads, in order; the functions as a mask of which are
 * set. Two plugins have the same record exactly when the host would see the
 * same thing in both. */
void lk__scan_write(const lk_plugin *pl, lk__buf *b);

/* Rebuilds a plugin from a record (len bytes, need not be terminated) in
 * arena: host memory whose function members are stubs that fail with
 * LK_ERR_LOAD (set exactly where the plugin's are). Returns NULL when the
 * record is malformed or does not pass lk__validate_plugin. */
const lk_plugin *lk__scan_read(const char *rec, size_t len, lk__arena *arena);

/* Bits of the function mask, in the record and in lk__scan_fn_mask. */
uint32_t lk__scan_fn_mask(const lk_loss_desc *d, uint32_t abi_minor);

#endif
