/* npy.c: owned arrays, and reading and writing NumPy .npy files.
 *
 * The .npy format (numpy/lib/format.py): the magic "\x93NUMPY", a major and a
 * minor version byte, the header length (2 bytes little-endian in 1.0, 4 in
 * 2.0 and 3.0), then the header: a Python dict literal with the keys 'descr',
 * 'fortran_order' and 'shape' (ASCII; UTF-8 in 3.0), padded with spaces and
 * ended by '\n'; then the raw elements.
 *
 * Files come from anywhere, so the reader treats every byte as hostile: no
 * header value is used to allocate, index or size anything before it has
 * been range-checked, and every refusal is one line naming the file. */
#include "internal.h" /* lk__escape */
#include "losskit/losskit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC        "\x93NUMPY"
#define NPY_MAGIC_LEN    6
#define NPY_PREAMBLE_LEN 8  /* magic + major + minor */
#define NPY_ALIGN        64 /* numpy aligns the data offset to 64 bytes */
/* numpy leaves room after the dict so that the first dimension can grow to
 * 21 digits without moving the data; we copy it so that our files are
 * byte-identical to numpy's. */
#define NPY_GROWTH_DIGITS 21
/* A real header is well under 1 KiB (16 dims of 19 digits); anything beyond
 * this is garbage, and the limit keeps a hostile length from driving a huge
 * allocation when the file size is unknown (a pipe). */
#define NPY_MAX_HEADER  ((uint32_t)1 << 20)
#define NPY_DESCR_CAP   48
#define NPY_KEY_CAP     32
#define NPY_WRITE_CHUNK 65536
#define NPY_SUPPORTED   "losskit reads little-endian float32, float64, int64, int32, uint8, bool"

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

/* Messages are one line: a path or header byte could carry a newline or a
 * terminal escape, so control characters are escaped (lk__escape). */
static void set_err(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(char *errmsg, const char *fmt, ...)
{
    if (!errmsg)
        return;
    char raw[LK_ERRMSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    lk__escape(errmsg, LK_ERRMSG_CAP, raw);
}

/* strerror() is not thread-safe and files may be read on many threads. With
 * _DEFAULT_SOURCE glibc gives the XSI strerror_r, which returns an int. */
static const char *errno_text(int e, char *buf, size_t cap)
{
    if (strerror_r(e, buf, cap) != 0)
        snprintf(buf, cap, "error %d", e);
    return buf;
}

/* A copy of bytes that came from a file, for quoting them: set_err escapes
 * control characters as \xHH (lk__escape); a NUL byte, which would end the
 * string before that, is written \x00 here. */
static void printable(const char *s, size_t len, char *buf, size_t cap)
{
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        size_t need = s[i] == '\0' ? 4 : 1;
        if (used + need >= cap)
            break;
        if (s[i] == '\0')
            memcpy(buf + used, "\\x00", 4);
        else
            buf[used] = s[i];
        used += need;
    }
    buf[used] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Sizes and owned arrays                                                    */

LK_API size_t lk_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case LK_DTYPE_F32: return 4;
    case LK_DTYPE_F64: return 8;
    case LK_DTYPE_I64: return 8;
    case LK_DTYPE_I32: return 4;
    case LK_DTYPE_U8: return 1;
    case LK_DTYPE_BOOL: return 1;
    default: return 0;
    }
}

typedef enum size_check { SIZE_OK, SIZE_NEGATIVE, SIZE_OVERFLOW } size_check;

/* The element count and byte size of a shape. As in numpy, the product of
 * the nonzero dimensions times the element size must fit even when a zero
 * dimension makes the array empty: numpy refuses (0, 2^62, 2^62) too. The
 * byte size must fit both size_t (to allocate it) and int64 (the API's
 * sizes). */
static size_check shape_size(int32_t ndim, const int64_t *shape, size_t elemsize,
                             int64_t *count_out, size_t *nbytes_out)
{
    int64_t count = 1;
    int has_zero = 0;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return SIZE_NEGATIVE;
        if (shape[i] == 0)
            has_zero = 1;
        else if (__builtin_mul_overflow(count, shape[i], &count))
            return SIZE_OVERFLOW;
    }
    int64_t bytes;
    if (__builtin_mul_overflow(count, (int64_t)elemsize, &bytes) || (uint64_t)bytes > SIZE_MAX)
        return SIZE_OVERFLOW;
    if (has_zero)
        count = bytes = 0;
    *count_out = count;
    *nbytes_out = (size_t)bytes;
    return SIZE_OK;
}

/* Arrays of this many bytes or more are placed on 2 MiB boundaries and
 * advised as huge pages (madvise, where the kernel's transparent huge
 * pages are on "madvise", as Debian's are): a loss streaming tens of
 * megabytes then misses the TLB once per 2 MiB instead of once per 4 KiB,
 * and its loads wait less. */
#define ARRAY_HUGE_MIN ((size_t)4 << 20)
#define ARRAY_HUGE     ((size_t)2 << 20)

/* Allocates a's zeroed storage once the shape has been checked, aligned to
 * 64 bytes (a cache line: the kernels' vectors then never straddle one, and
 * large gradients can be written with streaming stores), large arrays to
 * ARRAY_HUGE. An empty array still gets one line: in an lk_tensor, data ==
 * NULL means "absent optional slot", which an empty array is not. */
static int array_fill(lk_array *a, int32_t dtype, int32_t ndim, const int64_t *shape, size_t nbytes)
{
    if (nbytes > SIZE_MAX - ARRAY_HUGE)
        return -1;
    size_t cap = (nbytes + 63) / 64 * 64;
    void *data;
    if (cap >= ARRAY_HUGE_MIN) {
        cap = (cap + ARRAY_HUGE - 1) / ARRAY_HUGE * ARRAY_HUGE;
        data = aligned_alloc(ARRAY_HUGE, cap);
        if (data)
            (void)madvise(data, cap, MADV_HUGEPAGE); /* advice: refused is harmless */
    } else {
        data = aligned_alloc(64, cap ? cap : 64);
    }
    if (!data)
        return -1;
    memset(data, 0, cap ? cap : 64);
    a->data = data;
    a->dtype = dtype;
    a->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++)
        a->shape[i] = shape[i];
    a->nbytes = nbytes;
    return 0;
}

LK_API lk_status lk_array_alloc(lk_array *a, int32_t dtype, int32_t ndim, const int64_t *shape,
                                char *errmsg)
{
    if (!a) {
        set_err(errmsg, "lk_array_alloc: the array pointer is NULL");
        return LK_ERR_INVALID;
    }
    memset(a, 0, sizeof *a);
    size_t elemsize = lk_dtype_size(dtype);
    if (elemsize == 0) {
        set_err(errmsg, "lk_array_alloc: unknown dtype %d", (int)dtype);
        return LK_ERR_DTYPE;
    }
    if (ndim < 0 || ndim > LK_MAX_NDIM) {
        set_err(errmsg, "lk_array_alloc: ndim %d is outside 0..%d", (int)ndim, LK_MAX_NDIM);
        return LK_ERR_INVALID;
    }
    if (ndim > 0 && !shape) {
        set_err(errmsg, "lk_array_alloc: shape is NULL for ndim %d", (int)ndim);
        return LK_ERR_INVALID;
    }
    int64_t count;
    size_t nbytes;
    switch (shape_size(ndim, shape, elemsize, &count, &nbytes)) {
    case SIZE_NEGATIVE:
        set_err(errmsg, "lk_array_alloc: the shape has a negative dimension");
        return LK_ERR_INVALID;
    case SIZE_OVERFLOW:
        set_err(errmsg, "lk_array_alloc: the shape's size in bytes overflows");
        return LK_ERR_INVALID;
    case SIZE_OK: break;
    }
    if (array_fill(a, dtype, ndim, shape, nbytes) != 0) {
        set_err(errmsg, "lk_array_alloc: cannot allocate %zu bytes for a %s array", nbytes,
                lk_dtype_name(dtype));
        return LK_ERR_NOMEM;
    }
    return LK_OK;
}

LK_API void lk_array_free(lk_array *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ------------------------------------------------------------------------ */
/* Header dict parser                                                        */

/* The subset of Python literal syntax numpy writes (and old numpy wrote):
 * a dict of quoted string keys; a string for 'descr', True/False for
 * 'fortran_order', a tuple of non-negative ints (Python 2 'L' suffix
 * allowed) for 'shape'; whitespace and trailing commas anywhere Python
 * allows them. Everything else is refused. */

enum { SEEN_DESCR = 1, SEEN_FORTRAN = 2, SEEN_SHAPE = 4 };

typedef struct npy_header {
    char descr[NPY_DESCR_CAP]; /* truncated copy, NUL-terminated */
    size_t descr_len;          /* full length; may exceed the copy */
    int fortran;
    int32_t ndim;
    int64_t shape[LK_MAX_NDIM];
    unsigned seen;
} npy_header;

typedef struct hdr_parser {
    const char *s;
    size_t n;
    size_t pos;
    size_t base; /* file offset of s[0], so messages point into the file */
    const char *path;
    char *errmsg;
} hdr_parser;

static int hdr_peek(const hdr_parser *p)
{
    return p->pos < p->n ? (unsigned char)p->s[p->pos] : -1;
}

static void hdr_skip_ws(hdr_parser *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* What sits at the cursor, for "expected X, found Y". */
static const char *hdr_found(const hdr_parser *p, char *buf, size_t cap)
{
    int c = hdr_peek(p);
    if (c < 0)
        snprintf(buf, cap, "the end of the header");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(buf, cap, "'%c'", c);
    else
        snprintf(buf, cap, "byte 0x%02x", (unsigned)c);
    return buf;
}

static lk_status hdr_fail(const hdr_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static lk_status hdr_fail(const hdr_parser *p, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    set_err(p->errmsg, "%s: malformed .npy header at byte %zu: %s", p->path, p->base + p->pos,
            detail);
    return LK_ERR_FORMAT;
}

static lk_status hdr_expect(hdr_parser *p, char want, const char *context)
{
    hdr_skip_ws(p);
    if (hdr_peek(p) != (unsigned char)want) {
        char found[32];
        return hdr_fail(p, "expected '%c' %s, found %s", want, context,
                        hdr_found(p, found, sizeof found));
    }
    p->pos++;
    return LK_OK;
}

/* A quoted string: a copy of up to cap - 1 bytes goes to buf, the full
 * length to *len. Escapes never occur in numpy headers and are refused
 * rather than half-interpreted. */
static lk_status hdr_string(hdr_parser *p, char *buf, size_t cap, size_t *len)
{
    hdr_skip_ws(p);
    int q = hdr_peek(p);
    if (q != '\'' && q != '"') {
        char found[32];
        return hdr_fail(p, "expected a quoted string, found %s", hdr_found(p, found, sizeof found));
    }
    p->pos++;
    size_t n = 0;
    for (;;) {
        int c = hdr_peek(p);
        if (c < 0 || c == '\n')
            return hdr_fail(p, "unterminated string");
        if (c == '\\')
            return hdr_fail(p, "escape sequences in strings are not supported");
        p->pos++;
        if (c == q)
            break;
        if (n + 1 < cap)
            buf[n] = (char)c;
        n++;
    }
    buf[n < cap ? n : cap - 1] = '\0';
    *len = n;
    return LK_OK;
}

static int is_ident_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static lk_status hdr_bool(hdr_parser *p, int *value)
{
    hdr_skip_ws(p);
    size_t start = p->pos;
    while (is_ident_char(hdr_peek(p)))
        p->pos++;
    size_t len = p->pos - start;
    const char *w = p->s + start;
    if (len == 4 && memcmp(w, "True", 4) == 0) {
        *value = 1;
        return LK_OK;
    }
    if (len == 5 && memcmp(w, "False", 5) == 0) {
        *value = 0;
        return LK_OK;
    }
    p->pos = start;
    char found[32];
    return hdr_fail(p, "'fortran_order' must be True or False, found %s",
                    hdr_found(p, found, sizeof found));
}

/* One dimension: decimal digits, overflow-checked, with the 'L' suffix
 * Python 2 numpy wrote. A minus sign is diagnosed as such. */
static lk_status hdr_dim(hdr_parser *p, int64_t *out)
{
    hdr_skip_ws(p);
    int negative = 0;
    if (hdr_peek(p) == '-') {
        negative = 1;
        p->pos++;
    }
    int c = hdr_peek(p);
    if (c < '0' || c > '9') {
        char found[32];
        return hdr_fail(p, "expected a dimension in 'shape', found %s",
                        hdr_found(p, found, sizeof found));
    }
    int64_t v = 0;
    size_t start = p->pos;
    while ((c = hdr_peek(p)) >= '0' && c <= '9') {
        if (__builtin_mul_overflow(v, (int64_t)10, &v) ||
            __builtin_add_overflow(v, (int64_t)(c - '0'), &v)) {
            p->pos = start;
            return hdr_fail(p, "dimension in 'shape' does not fit int64");
        }
        p->pos++;
    }
    if (hdr_peek(p) == 'L' || hdr_peek(p) == 'l')
        p->pos++;
    if (is_ident_char(hdr_peek(p))) {
        char found[32];
        return hdr_fail(p, "unexpected %s after a dimension in 'shape'",
                        hdr_found(p, found, sizeof found));
    }
    if (negative && v != 0) {
        p->pos = start;
        return hdr_fail(p, "negative dimension -%lld in 'shape'", (long long)v);
    }
    *out = v;
    return LK_OK;
}

/* A tuple: (), (5,), (2, 3), (2, 3,). (5) is an int in Python, not a
 * tuple, and numpy refuses it, so we do too. */
static lk_status hdr_shape(hdr_parser *p, npy_header *h)
{
    lk_status st = hdr_expect(p, '(', "to open the 'shape' tuple");
    if (st != LK_OK)
        return st;
    h->ndim = 0;
    for (;;) {
        hdr_skip_ws(p);
        if (hdr_peek(p) == ')') {
            p->pos++;
            return LK_OK;
        }
        if (h->ndim == LK_MAX_NDIM)
            return hdr_fail(p, "'shape' has more than %d dimensions, the most losskit supports",
                            LK_MAX_NDIM);
        st = hdr_dim(p, &h->shape[h->ndim]);
        if (st != LK_OK)
            return st;
        h->ndim++;
        hdr_skip_ws(p);
        int c = hdr_peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == ')' && h->ndim >= 2) {
            p->pos++;
            return LK_OK;
        }
        char found[32];
        if (c == ')')
            return hdr_fail(p, "'shape' (%lld) is not a tuple; a 1-d shape is written (%lld,)",
                            (long long)h->shape[0], (long long)h->shape[0]);
        return hdr_fail(p, "expected ',' or ')' in 'shape', found %s",
                        hdr_found(p, found, sizeof found));
    }
}

static lk_status hdr_descr(hdr_parser *p, npy_header *h)
{
    hdr_skip_ws(p);
    if (hdr_peek(p) == '[') {
        /* A structured dtype is a valid header but not a dtype we read; say
         * so rather than "malformed". The rest of the header is moot. */
        set_err(p->errmsg, "%s: unsupported dtype (structured: a list of fields); " NPY_SUPPORTED,
                p->path);
        return LK_ERR_DTYPE;
    }
    return hdr_string(p, h->descr, sizeof h->descr, &h->descr_len);
}

static lk_status hdr_entry(hdr_parser *p, npy_header *h)
{
    size_t key_pos = p->pos;
    char key[NPY_KEY_CAP];
    size_t key_len;
    lk_status st = hdr_string(p, key, sizeof key, &key_len);
    if (st != LK_OK)
        return st;
    unsigned bit = 0;
    if (key_len == 5 && strcmp(key, "descr") == 0)
        bit = SEEN_DESCR;
    else if (key_len == 13 && strcmp(key, "fortran_order") == 0)
        bit = SEEN_FORTRAN;
    else if (key_len == 5 && strcmp(key, "shape") == 0)
        bit = SEEN_SHAPE;
    char shown[4 * NPY_KEY_CAP];
    printable(key, key_len < sizeof key ? key_len : sizeof key - 1, shown, sizeof shown);
    if (bit == 0) {
        p->pos = key_pos;
        return hdr_fail(p, "unknown key '%s' (expected 'descr', 'fortran_order', 'shape')", shown);
    }
    if (h->seen & bit) {
        p->pos = key_pos;
        return hdr_fail(p, "duplicate key '%s'", shown);
    }
    h->seen |= bit;
    st = hdr_expect(p, ':', "after a key");
    if (st != LK_OK)
        return st;
    if (bit == SEEN_DESCR)
        return hdr_descr(p, h);
    if (bit == SEEN_FORTRAN)
        return hdr_bool(p, &h->fortran);
    return hdr_shape(p, h);
}

static lk_status hdr_parse(hdr_parser *p, npy_header *h)
{
    memset(h, 0, sizeof *h);
    lk_status st = hdr_expect(p, '{', "to open the header dict");
    if (st != LK_OK)
        return st;
    for (;;) {
        hdr_skip_ws(p);
        if (hdr_peek(p) == '}') {
            p->pos++;
            break;
        }
        st = hdr_entry(p, h);
        if (st != LK_OK)
            return st;
        hdr_skip_ws(p);
        int c = hdr_peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == '}') {
            p->pos++;
            break;
        }
        char found[32];
        return hdr_fail(p, "expected ',' or '}' in the header dict, found %s",
                        hdr_found(p, found, sizeof found));
    }
    /* Only padding may follow the dict. */
    hdr_skip_ws(p);
    if (p->pos < p->n) {
        char found[32];
        return hdr_fail(p, "unexpected %s after the header dict",
                        hdr_found(p, found, sizeof found));
    }
    static const char *const names[] = {"descr", "fortran_order", "shape"};
    for (unsigned i = 0; i < 3; i++)
        if (!(h->seen & (1u << i)))
            return hdr_fail(p, "the header dict has no '%s' key", names[i]);
    return LK_OK;
}

/* ------------------------------------------------------------------------ */
/* dtypes                                                                    */

/* The dtypes losskit reads, by what follows the byte-order character. */
static const struct npy_kind {
    const char *base; /* "f4" */
    int32_t dtype;
    const char *name;  /* "float32" */
    const char *numpy; /* what NumPy writes: "<f4", "|u1" */
} npy_kinds[] = {
    {"f4", LK_DTYPE_F32, "float32", "<f4"}, {"f8", LK_DTYPE_F64, "float64", "<f8"},
    {"i8", LK_DTYPE_I64, "int64", "<i8"},   {"i4", LK_DTYPE_I32, "int32", "<i4"},
    {"u1", LK_DTYPE_U8, "uint8", "|u1"},    {"b1", LK_DTYPE_BOOL, "bool", "|b1"},
};
#define NPY_N_KINDS (sizeof npy_kinds / sizeof npy_kinds[0])

static int is_order_char(char c)
{
    return c == '<' || c == '>' || c == '|' || c == '=';
}

/* The npy_kinds entry of s (len bytes, no byte-order character), or NULL. */
static const struct npy_kind *kind_of(const char *s, size_t len)
{
    for (size_t i = 0; i < NPY_N_KINDS; i++)
        if (len == 2 && memcmp(s, npy_kinds[i].base, 2) == 0)
            return &npy_kinds[i];
    return NULL;
}

/* Little-endian ('<') for the multi-byte types; a 1-byte type has no byte
 * order, so any byte-order character (or none) means the same bytes. */
static int32_t dtype_from_descr(const char *descr, size_t len)
{
    size_t o = len > 0 && is_order_char(descr[0]) ? 1 : 0;
    const struct npy_kind *k = kind_of(descr + o, len - o);
    if (!k)
        return LK_DTYPE_INVALID;
    if (lk_dtype_size(k->dtype) == 1 || (o == 1 && descr[0] == '<'))
        return k->dtype;
    return LK_DTYPE_INVALID;
}

static const char *dtype_descr(int32_t dtype)
{
    for (size_t i = 0; i < NPY_N_KINDS; i++)
        if (npy_kinds[i].dtype == dtype)
            return npy_kinds[i].numpy;
    return NULL;
}

/* When d names a dtype losskit reads but with the wrong byte-order
 * character ('=f4', '|f4', 'f4') or with bytes around it ('<f4 '): what is
 * wrong and what to write instead, into buf; returns 1. Returns 0 for every
 * other descr (big-endian '>f4' included: descr_reason names it). */
static int descr_spelling(const char *d, size_t len, char *buf, size_t cap)
{
    size_t lead = 0;
    while (lead < len && (d[lead] == ' ' || d[lead] == '\t'))
        lead++;
    const char *e = d + lead;
    size_t elen = len - lead;
    size_t o = elen > 0 && is_order_char(e[0]) ? 1 : 0;
    size_t m = o;
    if (m < elen && ((e[m] >= 'a' && e[m] <= 'z') || (e[m] >= 'A' && e[m] <= 'Z')))
        m++;
    while (m < elen && e[m] >= '0' && e[m] <= '9')
        m++;
    const struct npy_kind *k = kind_of(e + o, m - o);
    if (!k)
        return 0;
    if (lead > 0 || m < elen) {
        char extra[4 * NPY_DESCR_CAP];
        if (lead > 0)
            printable(d, lead, extra, sizeof extra);
        else
            printable(e + m, elen - m, extra, sizeof extra);
        snprintf(buf, cap, "unexpected '%s' %s '%.*s' (NumPy writes '%s')", extra,
                 lead > 0 ? "before" : "after", (int)m, e, k->numpy);
        return 1;
    }
    if (lk_dtype_size(k->dtype) == 1 || (o == 1 && (e[0] == '<' || e[0] == '>')))
        return 0;
    if (o == 0)
        snprintf(buf, cap,
                 "it has no byte-order character; losskit reads '%s' (little-endian %s, as NumPy "
                 "writes it)",
                 k->numpy, k->name);
    else
        snprintf(buf, cap,
                 "byte order '%c' (%s) is not accepted for a multi-byte type; losskit reads '%s' "
                 "(little-endian %s, as NumPy writes it)",
                 e[0],
                 e[0] == '=' ? "the native order of the machine that wrote it" : "not applicable",
                 k->numpy, k->name);
    return 1;
}

/* Why a descr is refused, in numpy's words where possible: "big-endian",
 * "float16", "complex64", "Python objects", ... */
static void descr_reason(const char *d, size_t len, char *buf, size_t cap)
{
    if (len >= 2 && d[0] == '>') {
        char alt[NPY_DESCR_CAP];
        memcpy(alt, d, len < sizeof alt ? len : sizeof alt);
        alt[0] = '<';
        if (dtype_from_descr(alt, len) != LK_DTYPE_INVALID) {
            snprintf(buf, cap, "big-endian");
            return;
        }
    }
    size_t i = len > 0 && is_order_char(d[0]) ? 1 : 0;
    char kind = i < len ? d[i] : '\0';
    long bytes = 0;
    for (size_t j = i + 1; j < len && j < i + 6 && d[j] >= '0' && d[j] <= '9'; j++)
        bytes = bytes * 10 + (d[j] - '0');
    if (bytes == 0 && strchr("fciub", kind ? kind : 'x'))
        kind = '?'; /* a sized kind without a size */
    switch (kind) {
    case 'f': snprintf(buf, cap, "float%ld", bytes * 8); break;
    case 'c': snprintf(buf, cap, "complex%ld", bytes * 8); break;
    case 'i': snprintf(buf, cap, "int%ld", bytes * 8); break;
    case 'u': snprintf(buf, cap, "uint%ld", bytes * 8); break;
    case 'b': snprintf(buf, cap, "bool of %ld bytes", bytes); break;
    case 'O': snprintf(buf, cap, "Python objects"); break;
    case 'U': snprintf(buf, cap, "unicode strings"); break;
    case 'S':
    case 'a': snprintf(buf, cap, "byte strings"); break;
    case 'V': snprintf(buf, cap, "raw bytes"); break;
    case 'M': snprintf(buf, cap, "datetime64"); break;
    case 'm': snprintf(buf, cap, "timedelta64"); break;
    default: snprintf(buf, cap, "not a dtype losskit knows"); break;
    }
    if (len >= 2 && d[0] == '>' && bytes > 1)
        snprintf(buf + strlen(buf), cap - strlen(buf), ", big-endian");
}

/* ------------------------------------------------------------------------ */
/* Byte order                                                                */

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* .npy data here is little-endian; a big-endian host swaps each element. */
static void swap_elements(void *data, size_t nbytes, size_t elemsize)
{
    unsigned char *p = data;
    for (size_t off = 0; off + elemsize <= nbytes; off += elemsize)
        for (size_t i = 0; i < elemsize / 2; i++) {
            unsigned char t = p[off + i];
            p[off + i] = p[off + elemsize - 1 - i];
            p[off + elemsize - 1 - i] = t;
        }
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */

typedef struct npy_file {
    FILE *f;
    const char *path;
    char *errmsg;
    int64_t size; /* -1 when not a regular file */
} npy_file;

/* Reads exactly n bytes. A short read is a truncated file (FORMAT), saying
 * how many bytes there were; a read error is IO. */
static lk_status read_exact(npy_file *nf, void *buf, size_t n, const char *what)
{
    size_t got = fread(buf, 1, n, nf->f);
    if (got == n)
        return LK_OK;
    if (ferror(nf->f)) {
        char eb[128];
        set_err(nf->errmsg, "%s: cannot read the %s: %s", nf->path, what,
                errno_text(errno, eb, sizeof eb));
        return LK_ERR_IO;
    }
    set_err(nf->errmsg, "%s: truncated file: the %s needs %zu bytes, found %zu", nf->path, what, n,
            got);
    return LK_ERR_FORMAT;
}

static uint32_t le_u32(const unsigned char *b, size_t n)
{
    uint32_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = (v << 8) | b[i];
    return v;
}

/* The magic and version; *hlen_bytes gets 2 or 4. */
static lk_status read_preamble(npy_file *nf, size_t *hlen_bytes)
{
    unsigned char pre[NPY_PREAMBLE_LEN];
    size_t got = fread(pre, 1, sizeof pre, nf->f);
    if (got < sizeof pre && ferror(nf->f)) {
        char eb[128];
        set_err(nf->errmsg, "%s: cannot read: %s", nf->path, errno_text(errno, eb, sizeof eb));
        return LK_ERR_IO;
    }
    if (got == 0) {
        set_err(nf->errmsg, "%s: not a .npy file (the file is empty)", nf->path);
        return LK_ERR_FORMAT;
    }
    if (got < NPY_MAGIC_LEN || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        set_err(nf->errmsg, "%s: not a .npy file (bad magic: it does not start with \\x93NUMPY)",
                nf->path);
        return LK_ERR_FORMAT;
    }
    if (got < sizeof pre) {
        set_err(nf->errmsg, "%s: truncated file: it ends inside the format version", nf->path);
        return LK_ERR_FORMAT;
    }
    unsigned major = pre[6], minor = pre[7];
    if (minor != 0 || major < 1 || major > 3) {
        set_err(nf->errmsg,
                "%s: unsupported .npy format version %u.%u (losskit reads 1.0, 2.0, 3.0)", nf->path,
                major, minor);
        return LK_ERR_FORMAT;
    }
    *hlen_bytes = major == 1 ? 2 : 4;
    return LK_OK;
}

/* Reads the header length and the header text into a fresh buffer. */
static lk_status read_header_text(npy_file *nf, size_t hlen_bytes, char **text, size_t *len)
{
    unsigned char lb[4];
    lk_status st = read_exact(nf, lb, hlen_bytes, "header length");
    if (st != LK_OK)
        return st;
    uint32_t hlen = le_u32(lb, hlen_bytes);
    int64_t after = (int64_t)(NPY_PREAMBLE_LEN + hlen_bytes);
    if (nf->size >= 0 && (int64_t)hlen > nf->size - after) {
        set_err(nf->errmsg,
                "%s: truncated file: the header length %lu runs past the end of the file "
                "(%lld bytes follow it)",
                nf->path, (unsigned long)hlen, (long long)(nf->size - after));
        return LK_ERR_FORMAT;
    }
    if (hlen == 0 || hlen > NPY_MAX_HEADER) {
        set_err(nf->errmsg, "%s: implausible .npy header length %lu", nf->path,
                (unsigned long)hlen);
        return LK_ERR_FORMAT;
    }
    char *buf = malloc(hlen);
    if (!buf) {
        set_err(nf->errmsg, "%s: out of memory reading the header", nf->path);
        return LK_ERR_NOMEM;
    }
    st = read_exact(nf, buf, hlen, "header");
    if (st != LK_OK) {
        free(buf);
        return st;
    }
    *text = buf;
    *len = hlen;
    return LK_OK;
}

/* Checks what the header says against what losskit reads; fills dtype and
 * nbytes. */
static lk_status check_header(npy_file *nf, const npy_header *h, int32_t *dtype, size_t *nbytes)
{
    *dtype = dtype_from_descr(h->descr, h->descr_len);
    if (*dtype == LK_DTYPE_INVALID) {
        size_t len = h->descr_len < sizeof h->descr ? h->descr_len : sizeof h->descr - 1;
        const char *more = h->descr_len >= sizeof h->descr ? "..." : "";
        char shown[4 * NPY_DESCR_CAP], why[4 * NPY_DESCR_CAP + 160];
        printable(h->descr, len, shown, sizeof shown);
        if (!more[0] && descr_spelling(h->descr, len, why, sizeof why)) {
            set_err(nf->errmsg, "%s: unsupported dtype '%s': %s", nf->path, shown, why);
            return LK_ERR_DTYPE;
        }
        descr_reason(h->descr, len, why, sizeof why);
        set_err(nf->errmsg, "%s: unsupported dtype '%s%s' (%s); " NPY_SUPPORTED, nf->path, shown,
                more, why);
        return LK_ERR_DTYPE;
    }
    if (h->fortran) {
        set_err(nf->errmsg,
                "%s: fortran_order True is not supported; losskit reads C-order arrays "
                "(save np.ascontiguousarray(a))",
                nf->path);
        return LK_ERR_FORMAT;
    }
    int64_t count;
    if (shape_size(h->ndim, h->shape, lk_dtype_size(*dtype), &count, nbytes) != SIZE_OK) {
        set_err(nf->errmsg, "%s: the shape's size in bytes overflows (the header is corrupt)",
                nf->path);
        return LK_ERR_FORMAT;
    }
    return LK_OK;
}

/* The data must be exactly what the header promises: a shorter file is
 * truncated, a longer one was not written by numpy (or was appended to). */
static lk_status check_data_size(npy_file *nf, int64_t offset, size_t nbytes)
{
    if (nf->size < 0)
        return LK_OK; /* not a regular file: read_data finds out */
    int64_t have = nf->size - offset;
    if (have < 0 || (uint64_t)have < nbytes) {
        set_err(nf->errmsg, "%s: truncated file: expected %zu data bytes, found %lld", nf->path,
                nbytes, (long long)have);
        return LK_ERR_FORMAT;
    }
    if ((uint64_t)have > nbytes) {
        set_err(nf->errmsg, "%s: %lld trailing bytes after the %zu data bytes the header promises",
                nf->path, (long long)((uint64_t)have - nbytes), nbytes);
        return LK_ERR_FORMAT;
    }
    return LK_OK;
}

static lk_status read_data(npy_file *nf, lk_array *a)
{
    size_t got = a->nbytes ? fread(a->data, 1, a->nbytes, nf->f) : 0;
    if (got < a->nbytes) {
        if (ferror(nf->f)) {
            char eb[128];
            set_err(nf->errmsg, "%s: cannot read the data: %s", nf->path,
                    errno_text(errno, eb, sizeof eb));
            return LK_ERR_IO;
        }
        set_err(nf->errmsg, "%s: truncated file: expected %zu data bytes, found %zu", nf->path,
                a->nbytes, got);
        return LK_ERR_FORMAT;
    }
    /* Catches growth since fstat, and non-regular files. */
    if (fgetc(nf->f) != EOF) {
        set_err(nf->errmsg, "%s: trailing bytes after the %zu data bytes the header promises",
                nf->path, a->nbytes);
        return LK_ERR_FORMAT;
    }
    if (ferror(nf->f)) {
        char eb[128];
        set_err(nf->errmsg, "%s: cannot read the data: %s", nf->path,
                errno_text(errno, eb, sizeof eb));
        return LK_ERR_IO;
    }
    return LK_OK;
}

/* numpy bools are bytes 0 and 1; anything else would make a loss's
 * behaviour depend on how a plugin tests truth. */
static lk_status check_bools(npy_file *nf, const lk_array *a)
{
    const unsigned char *b = a->data;
    for (size_t i = 0; i < a->nbytes; i++)
        if (b[i] > 1) {
            set_err(nf->errmsg, "%s: bool element %zu has value %u; a .npy bool must be 0 or 1",
                    nf->path, i, (unsigned)b[i]);
            return LK_ERR_FORMAT;
        }
    return LK_OK;
}

static lk_status read_npy(npy_file *nf, lk_array *out)
{
    size_t hlen_bytes;
    lk_status st = read_preamble(nf, &hlen_bytes);
    if (st != LK_OK)
        return st;
    char *text = NULL;
    size_t text_len = 0;
    st = read_header_text(nf, hlen_bytes, &text, &text_len);
    if (st != LK_OK)
        return st;
    int64_t offset = (int64_t)(NPY_PREAMBLE_LEN + hlen_bytes + text_len);
    hdr_parser p = {text, text_len, 0, NPY_PREAMBLE_LEN + hlen_bytes, nf->path, nf->errmsg};
    npy_header h;
    st = hdr_parse(&p, &h);
    free(text);
    if (st != LK_OK)
        return st;
    int32_t dtype;
    size_t nbytes;
    st = check_header(nf, &h, &dtype, &nbytes);
    if (st == LK_OK)
        st = check_data_size(nf, offset, nbytes);
    if (st != LK_OK)
        return st;
    if (array_fill(out, dtype, h.ndim, h.shape, nbytes) != 0) {
        set_err(nf->errmsg, "%s: cannot allocate %zu bytes for the data", nf->path, nbytes);
        return LK_ERR_NOMEM;
    }
    st = read_data(nf, out);
    if (st == LK_OK && dtype == LK_DTYPE_BOOL)
        st = check_bools(nf, out);
    if (st == LK_OK && !host_is_little_endian())
        swap_elements(out->data, out->nbytes, lk_dtype_size(dtype));
    if (st != LK_OK)
        lk_array_free(out);
    return st;
}

LK_API lk_status lk_npy_read(const char *path, lk_array *out, char *errmsg)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out) {
        set_err(errmsg, "lk_npy_read: %s is NULL", path ? "out" : "path");
        return LK_ERR_INVALID;
    }
    /* messages name the file, shortened when it is very long (the item and
     * the problem must fit after it) */
    char shown[LK__PATH_BUF];
    npy_file nf = {NULL, lk__short_path(shown, path), errmsg, -1};
    /* Only a regular file: its size bounds every allocation before it is
     * made (a header cannot claim more than the file holds), and a FIFO is
     * refused instead of waited on. */
    char eb[128];
    int fd = lk__open_regular(path, &nf.size, eb, sizeof eb);
    nf.f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!nf.f) {
        if (fd >= 0) {
            errno_text(errno, eb, sizeof eb);
            close(fd);
        }
        set_err(errmsg, "%s: cannot open: %s", nf.path, eb);
        return LK_ERR_IO;
    }
    lk_status st = read_npy(&nf, out);
    fclose(nf.f); /* read-only: a close error cannot lose data */
    return st;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

/* Checks the tensor and computes its size; errors name the path. */
static lk_status check_tensor(const char *path, const lk_tensor *t, size_t *nbytes, char *errmsg)
{
    if (!dtype_descr(t->dtype)) {
        set_err(errmsg, "%s: cannot write dtype %d", path, (int)t->dtype);
        return LK_ERR_DTYPE;
    }
    if (t->ndim < 0 || t->ndim > LK_MAX_NDIM) {
        set_err(errmsg, "%s: cannot write ndim %d (0..%d)", path, (int)t->ndim, LK_MAX_NDIM);
        return LK_ERR_INVALID;
    }
    if (t->ndim > 0 && !t->shape) {
        set_err(errmsg, "%s: the tensor's shape is NULL", path);
        return LK_ERR_INVALID;
    }
    int64_t count;
    switch (shape_size(t->ndim, t->shape, lk_dtype_size(t->dtype), &count, nbytes)) {
    case SIZE_NEGATIVE:
        set_err(errmsg, "%s: the tensor's shape has a negative dimension", path);
        return LK_ERR_INVALID;
    case SIZE_OVERFLOW:
        set_err(errmsg, "%s: the tensor's size in bytes overflows", path);
        return LK_ERR_INVALID;
    case SIZE_OK: break;
    }
    if (count > 0 && !t->data) {
        set_err(errmsg, "%s: the tensor's data is NULL", path);
        return LK_ERR_INVALID;
    }
    return LK_OK;
}

/* The header exactly as numpy 1.24 writes it (so files are byte-identical):
 * the sorted-key dict, room for the first dimension to grow, spaces to put
 * the data at a multiple of 64, and '\n'. Returns the total length of
 * preamble + length field + header in buf, 0 when it does not fit. */
static size_t build_header(const lk_tensor *t, char *buf, size_t cap)
{
    char dict[1024];
    size_t n =
        (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                         dtype_descr(t->dtype));
    for (int32_t i = 0; i < t->ndim; i++)
        n += (size_t)snprintf(dict + n, sizeof dict - n, "%s%lld", i ? ", " : "",
                              (long long)t->shape[i]);
    n += (size_t)snprintf(dict + n, sizeof dict - n, "%s), }", t->ndim == 1 ? "," : "");
    if (t->ndim > 0) {
        char first[24];
        int digits = snprintf(first, sizeof first, "%lld", (long long)t->shape[0]);
        for (int i = digits; i < NPY_GROWTH_DIGITS; i++)
            dict[n++] = ' ';
    }
    /* numpy uses 1.0 unless the header needs the 4-byte length of 2.0;
     * with at most 16 dimensions that never happens, but the rule is kept. */
    size_t hlen = n + 1; /* + '\n' */
    size_t lenfield = 2;
    size_t pad = NPY_ALIGN - (NPY_PREAMBLE_LEN + lenfield + hlen) % NPY_ALIGN;
    if (hlen + pad > 65535) {
        lenfield = 4;
        pad = NPY_ALIGN - (NPY_PREAMBLE_LEN + lenfield + hlen) % NPY_ALIGN;
    }
    size_t total = NPY_PREAMBLE_LEN + lenfield + hlen + pad;
    if (total > cap)
        return 0;
    uint32_t stored = (uint32_t)(hlen + pad);
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = lenfield == 2 ? 1 : 2;
    buf[7] = 0;
    for (size_t i = 0; i < lenfield; i++)
        buf[NPY_PREAMBLE_LEN + i] = (char)((stored >> (8 * i)) & 0xff);
    size_t off = NPY_PREAMBLE_LEN + lenfield;
    memcpy(buf + off, dict, n);
    memset(buf + off + n, ' ', pad);
    buf[total - 1] = '\n';
    return total;
}

/* Whether strides describe plain C order. Strides of size-1 dimensions
 * never matter, nor do any strides of an empty tensor. */
static int is_c_contiguous(const lk_tensor *t)
{
    if (!t->strides)
        return 1;
    int64_t expect = 1;
    for (int32_t i = t->ndim; i-- > 0;) {
        if (t->shape[i] == 0)
            return 1;
        if (t->shape[i] != 1 && t->strides[i] != expect)
            return 0;
        expect *= t->shape[i];
    }
    return 1;
}

typedef struct npy_out {
    FILE *f;
    const char *path;
    char *errmsg;
} npy_out;

static lk_status write_bytes(npy_out *o, const void *buf, size_t n)
{
    if (n == 0 || fwrite(buf, 1, n, o->f) == n)
        return LK_OK;
    char eb[128];
    set_err(o->errmsg, "%s: write failed: %s", o->path, errno_text(errno, eb, sizeof eb));
    return LK_ERR_IO;
}

static lk_status flush_chunk(npy_out *o, unsigned char *chunk, size_t n, size_t elemsize)
{
    if (!host_is_little_endian())
        swap_elements(chunk, n, elemsize);
    return write_bytes(o, chunk, n);
}

/* Walks the tensor in C order through its strides (in elements, possibly
 * negative), copying elements into a chunk buffer written as it fills. */
static lk_status write_gathered(npy_out *o, const lk_tensor *t, size_t nbytes)
{
    size_t es = lk_dtype_size(t->dtype);
    if (nbytes == 0)
        return LK_OK;
    unsigned char *chunk = malloc(NPY_WRITE_CHUNK);
    if (!chunk) {
        set_err(o->errmsg, "%s: out of memory writing the data", o->path);
        return LK_ERR_NOMEM;
    }
    const char *base = t->data;
    int64_t idx[LK_MAX_NDIM] = {0};
    int64_t off = 0; /* element offset of idx */
    size_t fill = 0;
    lk_status st = LK_OK;
    for (size_t done = 0; done < nbytes && st == LK_OK; done += es) {
        memcpy(chunk + fill, base + off * (int64_t)es, es);
        fill += es;
        if (fill + es > NPY_WRITE_CHUNK) {
            st = flush_chunk(o, chunk, fill, es);
            fill = 0;
        }
        /* Next index in C order: bump the last dimension, carry left. */
        for (int32_t d = t->ndim; d-- > 0;) {
            const int64_t stride = t->strides ? t->strides[d] : 0;
            if (++idx[d] < t->shape[d]) {
                off += stride;
                break;
            }
            off -= stride * (t->shape[d] - 1);
            idx[d] = 0;
        }
    }
    if (st == LK_OK && fill > 0)
        st = flush_chunk(o, chunk, fill, es);
    free(chunk);
    return st;
}

static lk_status write_data(npy_out *o, const lk_tensor *t, size_t nbytes)
{
    if (is_c_contiguous(t) && host_is_little_endian())
        return write_bytes(o, t->data, nbytes);
    if (!t->strides) {
        /* C order on a big-endian host: gather with C strides. */
        int64_t cs[LK_MAX_NDIM];
        int64_t s = 1;
        for (int32_t i = t->ndim; i-- > 0;) {
            cs[i] = s;
            s *= t->shape[i] ? t->shape[i] : 1;
        }
        lk_tensor c = *t;
        c.strides = cs;
        return write_gathered(o, &c, nbytes);
    }
    return write_gathered(o, t, nbytes);
}

LK_API lk_status lk_npy_write(const char *path, const lk_tensor *t, char *errmsg)
{
    if (!path || !t) {
        set_err(errmsg, "lk_npy_write: %s is NULL", path ? "the tensor" : "path");
        return LK_ERR_INVALID;
    }
    size_t nbytes;
    char shown_buf[LK__PATH_BUF];
    const char *shown = lk__short_path(shown_buf, path); /* for messages */
    lk_status st = check_tensor(shown, t, &nbytes, errmsg);
    if (st != LK_OK)
        return st;
    char header[2048];
    size_t hlen = build_header(t, header, sizeof header);
    if (hlen == 0) {
        set_err(errmsg, "%s: internal error: the .npy header does not fit", shown);
        return LK_ERR_INTERNAL;
    }
    npy_out o = {fopen(path, "wb"), shown, errmsg};
    if (!o.f) {
        char eb[128];
        set_err(errmsg, "%s: cannot open for writing: %s", shown, errno_text(errno, eb, sizeof eb));
        return LK_ERR_IO;
    }
    st = write_bytes(&o, header, hlen);
    if (st == LK_OK)
        st = write_data(&o, t, nbytes);
    /* Buffered data reaches the file at fclose: its failure (a full disk)
     * is a failed write, not a detail. A partial file is left in place, not
     * removed: path may be a device or a FIFO, and a truncated .npy is
     * refused by any reader anyway. */
    if (fclose(o.f) != 0 && st == LK_OK) {
        char eb[128];
        set_err(errmsg, "%s: write failed when closing: %s", shown,
                errno_text(errno, eb, sizeof eb));
        st = LK_ERR_IO;
    }
    return st;
}
