/* util.c: names, messages and small helpers shared by the runtime. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

size_t lk__escape(char *dst, size_t cap, const char *src)
{
    size_t used = 0;
    if (cap == 0)
        return 0;
    for (const unsigned char *s = (const unsigned char *)src; *s; s++) {
        char esc[5];
        size_t n;
        if (*s >= 0x20 && *s != 0x7f) {
            esc[0] = (char)*s;
            n = 1;
        } else if (*s == '\n' || *s == '\r' || *s == '\t') {
            esc[0] = '\\';
            esc[1] = *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't';
            n = 2;
        } else {
            static const char hex[] = "0123456789abcdef";
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*s >> 4];
            esc[3] = hex[*s & 15];
            n = 4;
        }
        if (used + n >= cap)
            break; /* cut before an escape rather than through it */
        memcpy(dst + used, esc, n);
        used += n;
    }
    dst[used] = '\0';
    return used;
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
