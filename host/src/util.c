/* util.c: names, messages and small helpers shared by the runtime. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* The length of the well-formed UTF-8 sequence at s (2 to 4 bytes: no
 * overlong form, no surrogate, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned lo = 0x80, hi = 0xbf;
    size_t n;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        lo = s[0] == 0xe0 ? 0xa0 : 0x80;
        hi = s[0] == 0xed ? 0x9f : 0xbf;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        lo = s[0] == 0xf0 ? 0x90 : 0x80;
        hi = s[0] == 0xf4 ? 0x8f : 0xbf;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) /* stops at the NUL, which is no continuation */
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

void lk__fmt_double(char *buf, size_t cap, double v)
{
    if (isinf(v) || isnan(v)) { /* "nan" whatever its sign bit (printf gives "-nan") */
        snprintf(buf, cap, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void lk__ndims_str(char *buf, size_t cap, uint32_t ndims)
{
    int lo = __builtin_ctz(ndims), last = 31 - __builtin_clz(ndims); /* ndims != 0 */
    if (ndims == LK_NDIM_FROM(lo)) {
        snprintf(buf, cap, "%d or more", lo);
        return;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int d = lo; d <= last && used < cap; d++)
        if (ndims & LK_NDIM_BIT(d))
            used += (size_t)snprintf(buf + used, cap - used, "%s%d",
                                     d == lo     ? ""
                                     : d == last ? " or "
                                                 : ", ",
                                     d);
}

/* lk__escape's work: also says how many bytes of src the copy took. */
static size_t escape_core(char *dst, size_t cap, const char *src, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    size_t used = 0;
    const unsigned char *s = (const unsigned char *)src;
    while (*s) {
        char esc[8];
        size_t n = 0, take = *s >= 0x80 ? utf8_len(s) : 0;
        /* U+0080-U+009F (c2 80 to c2 9f) are the C1 controls spelled in UTF-8 */
        int c1_char = take == 2 && *s == 0xc2 && s[1] <= 0x9f;
        if (take > 0 && !c1_char) {
            memcpy(esc, s, take); /* well-formed UTF-8: a name in any script */
            n = take;
        } else if (c1_char || *s < 0x20 || *s == 0x7f || (*s >= 0x80 && *s <= 0x9f)) {
            /* C0, DEL and C1 (also as a stray byte): a terminal may act on
             * any of them */
            take = c1_char ? 2 : 1;
            if (*s == '\n' || *s == '\r' || *s == '\t') {
                esc[n++] = '\\';
                esc[n++] = *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't';
            } else {
                for (size_t i = 0; i < take; i++) {
                    esc[n++] = '\\';
                    esc[n++] = 'x';
                    esc[n++] = hex[s[i] >> 4];
                    esc[n++] = hex[s[i] & 15];
                }
            }
        } else {
            /* printable ASCII, or a stray byte from 0xa0 up: no control in
             * any terminal encoding */
            esc[0] = (char)*s;
            n = take = 1;
        }
        if (used + n >= cap)
            break; /* cut before an escape or a character rather than through it */
        memcpy(dst + used, esc, n);
        used += n;
        s += take;
    }
    dst[used] = '\0';
    if (consumed)
        *consumed = (size_t)((const char *)s - src);
    return used;
}

size_t lk__escape(char *dst, size_t cap, const char *src)
{
    if (cap == 0)
        return 0;
    return escape_core(dst, cap, src, NULL);
}

/* The shown path is cut to a start of at most PATH_HEAD bytes, "..." and
 * an end of at most PATH_TAIL bytes (both escaped). */
#define PATH_HEAD 56
#define PATH_TAIL (LK__PATH_SHOWN - PATH_HEAD - 3)

const char *lk__short_path(char *buf, const char *path)
{
    if (!path)
        path = "(null)";
    size_t consumed, n = strlen(path);
    escape_core(buf, LK__PATH_SHOWN + 1, path, &consumed); /* most paths fit whole */
    if (consumed == n)
        return buf;
    /* the start: up to its last '/' (keeping it), when there is one */
    char head[PATH_HEAD + 1];
    size_t hlen = escape_core(head, sizeof head, path, NULL);
    char *slash = strrchr(head, '/');
    if (slash && slash > head)
        hlen = (size_t)(slash + 1 - head);
    head[hlen] = '\0';
    /* the end: the most whole components that fit, else the last bytes that
     * fit, starting on a character */
    char tail[PATH_TAIL + 1];
    size_t start = n > PATH_TAIL ? n - PATH_TAIL : 0;
    size_t cut = start;
    while (cut < n && path[cut] != '/')
        cut++;
    if (cut == n)
        cut = start;
    for (;; cut++) {
        while (cut < n && ((unsigned char)path[cut] & 0xc0) == 0x80)
            cut++; /* never start inside a UTF-8 sequence */
        escape_core(tail, sizeof tail, path + cut, &consumed);
        if (consumed == n - cut)
            break;
        /* escapes made it longer: try the next component, else byte */
        size_t next = cut + 1;
        while (next < n && path[next] != '/')
            next++;
        if (next < n)
            cut = next - 1;
    }
    snprintf(buf, LK__PATH_SHOWN + 1, "%s...%s", head, tail);
    return buf;
}

lk_status lk__err(char *errmsg, lk_status st, const char *fmt, ...)
{
    if (errmsg) {
        char raw[LK_ERRMSG_CAP];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        lk__escape(errmsg, LK_ERRMSG_CAP, raw);
    }
    return st;
}

const char *lk__file_kind(unsigned mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

int lk__open_regular(const char *path, int64_t *size, char *why, size_t cap)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer that never
     * comes; what is opened is then judged by fstat, not by its name. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (strerror_r(e, why, cap) != 0)
            snprintf(why, cap, "error %d", e);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        if (strerror_r(e, why, cap) != 0)
            snprintf(why, cap, "error %d", e);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        if (!S_ISDIR(st.st_mode))
            snprintf(why, cap, "not a regular file (it is %s)", lk__file_kind(st.st_mode));
        else if (strerror_r(EISDIR, why, cap) != 0) /* as reading one would say */
            snprintf(why, cap, "Is a directory");
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags != -1)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    if (size)
        *size = (int64_t)st.st_size;
    return fd;
}

char *lk__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* The edit distance with adjacent transpositions (optimal string
 * alignment): "dcie" is 1 from "dice". */
size_t lk__levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return la > lb ? la : lb;
    size_t prev2[65], prev[65], row[65];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            row[j] = best;
        }
        memcpy(prev2, prev, sizeof prev);
        memcpy(prev, row, sizeof row);
    }
    return prev[lb];
}

const char *lk_closest_name(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, len = strlen(word);
    for (size_t i = 0; i < n; i++) {
        if (!names[i])
            continue;
        size_t d = lk__levenshtein(word, names[i]);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    if (!best)
        return NULL;
    /* close in edits, or the same start: "reduce" for "reduction" */
    size_t prefix = 0;
    while (word[prefix] && word[prefix] == best[prefix])
        prefix++;
    if (best_d <= 3 || best_d * 2 <= len || (prefix >= 4 && prefix * 2 >= len))
        return best;
    return NULL;
}

int64_t lk__numel(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

const char *lk_status_name(lk_status st)
{
    switch (st) {
    case LK_OK: return "LK_OK";
    case LK_ERR_INVALID: return "LK_ERR_INVALID";
    case LK_ERR_NOMEM: return "LK_ERR_NOMEM";
    case LK_ERR_DTYPE: return "LK_ERR_DTYPE";
    case LK_ERR_SHAPE: return "LK_ERR_SHAPE";
    case LK_ERR_UNSUPPORTED: return "LK_ERR_UNSUPPORTED";
    case LK_ERR_NUMERIC: return "LK_ERR_NUMERIC";
    case LK_ERR_IO: return "LK_ERR_IO";
    case LK_ERR_FORMAT: return "LK_ERR_FORMAT";
    case LK_ERR_CONFIG: return "LK_ERR_CONFIG";
    case LK_ERR_NOT_FOUND: return "LK_ERR_NOT_FOUND";
    case LK_ERR_LOAD: return "LK_ERR_LOAD";
    case LK_ERR_VERSION: return "LK_ERR_VERSION";
    case LK_ERR_INTERNAL: return "LK_ERR_INTERNAL";
    }
    return "LK_ERR_UNKNOWN";
}

const char *lk_status_text(lk_status st)
{
    switch (st) {
    case LK_OK: return "success";
    case LK_ERR_INVALID: return "invalid argument";
    case LK_ERR_NOMEM: return "out of memory";
    case LK_ERR_DTYPE: return "unsupported dtype";
    case LK_ERR_SHAPE: return "shape mismatch";
    case LK_ERR_UNSUPPORTED: return "unsupported operation";
    case LK_ERR_NUMERIC: return "numeric error";
    case LK_ERR_IO: return "input/output error";
    case LK_ERR_FORMAT: return "malformed file";
    case LK_ERR_CONFIG: return "invalid config";
    case LK_ERR_NOT_FOUND: return "not found";
    case LK_ERR_LOAD: return "plugin load failure";
    case LK_ERR_VERSION: return "ABI version mismatch";
    case LK_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *lk_dtype_name(int32_t dtype)
{
    return lk_sdk_dtype_name(dtype);
}

static const char *const reduction_names[LK_REDUCTION_COUNT] = {"none", "mean", "sum", "batchmean"};

const char *lk_reduction_name(int32_t reduction)
{
    if (reduction < 0 || reduction >= LK_REDUCTION_COUNT)
        return "invalid";
    return reduction_names[reduction];
}

int32_t lk_reduction_from_name(const char *name)
{
    for (int32_t r = 0; r < LK_REDUCTION_COUNT; r++)
        if (strcmp(name, reduction_names[r]) == 0)
            return r;
    return -1;
}

/* In util.c, which the scanner links too (scan.c reads it). */
uint32_t lk_slot_ndims_of(const lk_slot_desc *sd, uint32_t plugin_abi_minor)
{
    return plugin_abi_minor >= 3 ? sd->ndims : 0;
}

int32_t lk_slot_batch_of(const lk_slot_desc *sd, uint32_t plugin_abi_minor, uint32_t *views,
                         int32_t *padded)
{
    int declared = plugin_abi_minor >= 6 && sd->batch != LK_BATCH_UNDECLARED;
    if (views)
        *views = declared && sd->batch_views > 1 ? sd->batch_views : 1;
    if (padded)
        *padded = declared && (sd->flags & LK_SLOT_PADDED) ? 1 : 0;
    return declared ? sd->batch - 1 : -1;
}

const char *lk_param_unset_of(const lk_param_desc *pd, uint32_t plugin_abi_minor)
{
    return plugin_abi_minor >= 2 ? pd->unset : NULL;
}
