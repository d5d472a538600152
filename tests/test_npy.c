/* test_npy.c: lk_array_alloc/free, lk_npy_read and lk_npy_write.
 *
 * Fixtures in tests/data/npy/ were written by numpy (make_fixtures.py);
 * malformed files are written by the tests into a temporary directory under
 * the build tree. Every refusal is checked for its status, the file name and
 * the reason in the message, a one-line message, and a zeroed output. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "losskit/losskit.h"

#define FIXTURES LK_SOURCE_ROOT "/tests/data/npy/"

#define TMPDIR_TAG "npy"
#include "test_tmpdir.h"

TestSuite(npy, .init = make_tmpdir, .fini = remove_tmpdir);

/* ------------------------------------------------------------------------ */
/* File helpers                                                              */

static void write_file(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    if (len)
        cr_assert_eq(fwrite(bytes, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* The whole file in a malloc'd buffer. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_geq(n, 0);
    rewind(f);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* A .npy file with the given version, header text (used verbatim: no
 * padding is added, so tests control it) and data. */
static void write_npy_raw(const char *path, int major, const char *header, const void *data,
                          size_t datalen)
{
    size_t hl = strlen(header);
    size_t lenfield = major == 1 ? 2 : 4;
    size_t total = 8 + lenfield + hl + datalen;
    unsigned char *b = malloc(total);
    cr_assert_not_null(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (size_t i = 0; i < lenfield; i++)
        b[8 + i] = (unsigned char)((hl >> (8 * i)) & 0xff);
    memcpy(b + 8 + lenfield, header, hl);
    if (datalen)
        memcpy(b + 8 + lenfield + hl, data, datalen);
    write_file(path, b, total);
    free(b);
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* Reads path expecting failure: the status, a one-line message naming the
 * file and containing reason, and a zeroed output. */
static void expect_refusal(const char *path, lk_status want, const char *reason)
{
    lk_array a;
    memset(&a, 0xab, sizeof a); /* the reader must zero it */
    char msg[LK_ERRMSG_CAP];
    msg[0] = '\0';
    lk_status st = lk_npy_read(path, &a, msg);
    cr_assert_eq(st, want, "%s: status %d, want %d; message: %s", path, st, want, msg);
    cr_assert(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    cr_assert(strstr(msg, reason) != NULL, "message lacks \"%s\": %s", reason, msg);
    cr_assert(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
    cr_assert(all_zero(&a, sizeof a), "output not zeroed on failure");
}

/* Reads path expecting success. */
static void read_ok(const char *path, lk_array *a)
{
    char msg[LK_ERRMSG_CAP] = "";
    lk_status st = lk_npy_read(path, a, msg);
    cr_assert_eq(st, LK_OK, "%s: status %d: %s", path, st, msg);
}

static void assert_shape(const lk_array *a, int32_t dtype, int32_t ndim, const int64_t *shape)
{
    cr_assert_eq(a->dtype, dtype, "dtype %d, want %d", a->dtype, dtype);
    cr_assert_eq(a->ndim, ndim, "ndim %d, want %d", a->ndim, ndim);
    int64_t count = 1;
    for (int32_t i = 0; i < ndim; i++) {
        cr_assert_eq(a->shape[i], shape[i], "dim %d: %lld, want %lld", i,
                     (long long)a->shape[i], (long long)shape[i]);
        count *= shape[i];
    }
    cr_assert_eq(a->nbytes, (size_t)count * lk_dtype_size(dtype));
    cr_assert_not_null(a->data, "data is NULL (even an empty array gets storage)");
}

/* ------------------------------------------------------------------------ */
/* lk_dtype_size, lk_array_alloc, lk_array_free                              */

Test(npy, dtype_sizes)
{
    cr_assert_eq(lk_dtype_size(LK_DTYPE_F32), 4);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_F64), 8);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_I64), 8);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_I32), 4);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_U8), 1);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_BOOL), 1);
    cr_assert_eq(lk_dtype_size(LK_DTYPE_INVALID), 0);
    cr_assert_eq(lk_dtype_size(7), 0);
    cr_assert_eq(lk_dtype_size(-1), 0);
}

Test(npy, alloc_is_zeroed_and_shaped)
{
    lk_array a;
    const int64_t shape[3] = {2, 3, 4};
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_I32, 3, shape, msg), LK_OK, "%s", msg);
    cr_assert_eq(a.dtype, LK_DTYPE_I32);
    cr_assert_eq(a.ndim, 3);
    cr_assert_eq(a.shape[0], 2);
    cr_assert_eq(a.shape[1], 3);
    cr_assert_eq(a.shape[2], 4);
    cr_assert_eq(a.nbytes, 96);
    cr_assert(all_zero(a.data, a.nbytes));
    lk_array_free(&a);
    cr_assert(all_zero(&a, sizeof a), "free does not zero the struct");
    lk_array_free(&a); /* twice is harmless */
    lk_array_free(NULL);
}

/* Small arrays sit on cache lines; large ones (4 MiB and more) on 2 MiB
 * boundaries, where the kernel can back them with huge pages. Both zeroed
 * to the last byte. */
Test(npy, alloc_alignment_by_size)
{
    lk_array a, b;
    const int64_t small[1] = {1000}, large[1] = {(int64_t)(5 << 20) / 4 + 3};
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F32, 1, small, msg), LK_OK, "%s", msg);
    cr_assert_eq(lk_array_alloc(&b, LK_DTYPE_F32, 1, large, msg), LK_OK, "%s", msg);
    cr_assert_eq((uintptr_t)a.data % 64, 0);
    cr_assert_eq((uintptr_t)b.data % (2u << 20), 0, "a 5 MiB array at %p", b.data);
    cr_assert_eq(b.nbytes, (size_t)large[0] * 4);
    cr_assert(all_zero(b.data, b.nbytes));
    ((float *)b.data)[large[0] - 1] = 1.0f; /* its last element is writable */
    lk_array_free(&a);
    lk_array_free(&b);
}

Test(npy, alloc_scalar_and_empty)
{
    lk_array a;
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F64, 0, NULL, NULL), LK_OK);
    cr_assert_eq(a.nbytes, 8);
    cr_assert_not_null(a.data);
    lk_array_free(&a);
    const int64_t empty[2] = {4, 0};
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F64, 2, empty, NULL), LK_OK);
    cr_assert_eq(a.nbytes, 0);
    cr_assert_not_null(a.data, "an empty array must not look like an absent tensor");
    lk_array_free(&a);
}

Test(npy, alloc_refuses_bad_arguments)
{
    lk_array a;
    char msg[LK_ERRMSG_CAP];
    const int64_t huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
    memset(&a, 0xab, sizeof a);
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F32, 2, huge, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "overflows") != NULL, "%s", msg);
    cr_assert(all_zero(&a, sizeof a));

    /* The element count fits int64 but the byte count does not. */
    const int64_t big[1] = {INT64_C(1) << 61};
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F64, 1, big, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "overflows") != NULL, "%s", msg);

    const int64_t neg[1] = {-1};
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F32, 1, neg, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "negative") != NULL, "%s", msg);

    const int64_t one[1] = {1};
    cr_assert_eq(lk_array_alloc(&a, 42, 1, one, msg), LK_ERR_DTYPE);
    cr_assert(strstr(msg, "dtype 42") != NULL, "%s", msg);
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F32, LK_MAX_NDIM + 1, one, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "ndim 17") != NULL, "%s", msg);
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_F32, 1, NULL, msg), LK_ERR_INVALID);
    cr_assert(all_zero(&a, sizeof a));
    cr_assert_eq(lk_array_alloc(NULL, LK_DTYPE_F32, 1, one, NULL), LK_ERR_INVALID);
}

Test(npy, alloc_out_of_memory)
{
    /* 2^62 bytes fit size_t and int64 but no machine. */
    lk_array a;
    char msg[LK_ERRMSG_CAP];
    const int64_t shape[1] = {INT64_C(1) << 62};
    cr_assert_eq(lk_array_alloc(&a, LK_DTYPE_U8, 1, shape, msg), LK_ERR_NOMEM);
    cr_assert(strstr(msg, "cannot allocate 4611686018427387904 bytes") != NULL, "%s", msg);
    cr_assert(all_zero(&a, sizeof a));
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                               */

static void round_trip(const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                       const void *data, size_t nbytes)
{
    const char *path = tmp(name);
    lk_tensor t = {(void *)data, dtype, ndim, shape, NULL};
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_OK, "%s", msg);

    /* Header layout: data at a multiple of 64, header ended by '\n'. */
    size_t len;
    unsigned char *bytes = slurp(path, &len);
    cr_assert_geq(len, nbytes + 64);
    size_t offset = len - nbytes;
    cr_assert_eq(offset % 64, 0, "data offset %zu is not 64-aligned", offset);
    cr_assert_eq(bytes[offset - 1], '\n');
    cr_assert_eq(memcmp(bytes, "\x93NUMPY\x01\x00", 8), 0);
    cr_assert_eq((size_t)(bytes[8] | bytes[9] << 8), offset - 10);
    free(bytes);

    lk_array a;
    read_ok(path, &a);
    assert_shape(&a, dtype, ndim, shape);
    cr_assert_eq(a.nbytes, nbytes);
    if (nbytes)
        cr_assert_eq(memcmp(a.data, data, nbytes), 0, "data differs after the round trip");
    lk_array_free(&a);
}

Test(npy, round_trip_float32)
{
    const float v[4] = {1.5f, -0.0f, INFINITY, 3.4028235e38f};
    const int64_t s[1] = {4};
    round_trip("f32.npy", LK_DTYPE_F32, 1, s, v, sizeof v);
}

Test(npy, round_trip_float64)
{
    const double v[3] = {0.1, -1e-310, NAN};
    const int64_t s[1] = {3};
    round_trip("f64.npy", LK_DTYPE_F64, 1, s, v, sizeof v);
}

Test(npy, round_trip_int64)
{
    const int64_t v[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const int64_t s[2] = {2, 2};
    round_trip("i64.npy", LK_DTYPE_I64, 2, s, v, sizeof v);
}

Test(npy, round_trip_int32)
{
    const int32_t v[3] = {INT32_MIN, 7, INT32_MAX};
    const int64_t s[1] = {3};
    round_trip("i32.npy", LK_DTYPE_I32, 1, s, v, sizeof v);
}

Test(npy, round_trip_uint8)
{
    const uint8_t v[5] = {0, 1, 128, 254, 255};
    const int64_t s[1] = {5};
    round_trip("u8.npy", LK_DTYPE_U8, 1, s, v, sizeof v);
}

Test(npy, round_trip_bool)
{
    const uint8_t v[6] = {1, 0, 0, 1, 1, 0};
    const int64_t s[2] = {3, 2};
    round_trip("b.npy", LK_DTYPE_BOOL, 2, s, v, sizeof v);
}

Test(npy, round_trip_shape_scalar)
{
    const double v = -2.25;
    round_trip("s0.npy", LK_DTYPE_F64, 0, NULL, &v, sizeof v);
}

Test(npy, round_trip_shape_0)
{
    const int64_t s[1] = {0};
    round_trip("s1.npy", LK_DTYPE_F64, 1, s, NULL, 0);
}

Test(npy, round_trip_shape_3)
{
    const double v[3] = {1, 2, 3};
    const int64_t s[1] = {3};
    round_trip("s3.npy", LK_DTYPE_F64, 1, s, v, sizeof v);
}

Test(npy, round_trip_shape_2x3x4)
{
    double v[24];
    for (int i = 0; i < 24; i++)
        v[i] = i * 0.5 - 3;
    const int64_t s[3] = {2, 3, 4};
    round_trip("s234.npy", LK_DTYPE_F64, 3, s, v, sizeof v);
}

Test(npy, round_trip_shape_1x0x5)
{
    const float dummy = 0;
    const int64_t s[3] = {1, 0, 5};
    round_trip("s105.npy", LK_DTYPE_F32, 3, s, &dummy, 0);
}

Test(npy, round_trip_16_dims)
{
    int64_t s[LK_MAX_NDIM];
    for (int i = 0; i < LK_MAX_NDIM; i++)
        s[i] = i % 3 == 0 ? 2 : 1;
    int32_t v[64];
    for (int i = 0; i < 64; i++)
        v[i] = i * 31 - 1000;
    round_trip("s16.npy", LK_DTYPE_I32, LK_MAX_NDIM, s, v, sizeof v);
}

/* Files we write are byte-for-byte what numpy 1.24 writes for the same
 * array: same dict, same growth room, same padding. */
Test(npy, write_matches_numpy_bytes)
{
    static const char *const names[] = {"f32_2x3.npy", "f64_6.npy",   "i64_4.npy",
                                        "i32_2x2.npy", "u8_5.npy",    "bool_2x2.npy",
                                        "f64_scalar.npy", "f32_0x3.npy", "f32_15d.npy"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char src[PATH_MAX];
        snprintf(src, sizeof src, "%s%s", FIXTURES, names[i]);
        lk_array a;
        read_ok(src, &a);
        lk_tensor t = lk_array_view(&a);
        const char *dst = tmp(names[i]);
        char msg[LK_ERRMSG_CAP] = "";
        cr_assert_eq(lk_npy_write(dst, &t, msg), LK_OK, "%s", msg);
        size_t n1, n2;
        unsigned char *b1 = slurp(src, &n1), *b2 = slurp(dst, &n2);
        cr_assert_eq(n1, n2, "%s: %zu bytes, numpy wrote %zu", names[i], n2, n1);
        cr_assert_eq(memcmp(b1, b2, n1), 0, "%s: bytes differ from numpy's", names[i]);
        free(b1);
        free(b2);
        lk_array_free(&a);
    }
}

/* ------------------------------------------------------------------------ */
/* Strided writes                                                            */

static lk_array write_and_read(const char *name, const lk_tensor *t)
{
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_write(tmp(name), t, msg), LK_OK, "%s", msg);
    lk_array a;
    read_ok(tmp(name), &a);
    return a;
}

Test(npy, write_transposed_strides)
{
    /* A Fortran-order 2x3 view: element (i, j) is buf[i + 2j]. */
    const int32_t buf[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[2] = {2, 3}, strides[2] = {1, 2};
    lk_tensor t = {(void *)buf, LK_DTYPE_I32, 2, shape, strides};
    lk_array a = write_and_read("t.npy", &t);
    const int32_t want[6] = {0, 2, 4, 1, 3, 5};
    assert_shape(&a, LK_DTYPE_I32, 2, shape);
    cr_assert_eq(memcmp(a.data, want, sizeof want), 0);
    lk_array_free(&a);
}

Test(npy, write_negative_and_zero_strides)
{
    /* Reversed: data points at the last element, stride -1. */
    const double buf[4] = {1, 2, 3, 4};
    const int64_t shape[1] = {4}, strides[1] = {-1};
    lk_tensor t = {(void *)&buf[3], LK_DTYPE_F64, 1, shape, strides};
    lk_array a = write_and_read("rev.npy", &t);
    const double want[4] = {4, 3, 2, 1};
    cr_assert_eq(memcmp(a.data, want, sizeof want), 0);
    lk_array_free(&a);

    /* Broadcast rows: stride 0 on the first dimension. */
    const uint8_t row[3] = {7, 8, 9};
    const int64_t bshape[2] = {2, 3}, bstrides[2] = {0, 1};
    lk_tensor b = {(void *)row, LK_DTYPE_U8, 2, bshape, bstrides};
    a = write_and_read("bcast.npy", &b);
    const uint8_t bwant[6] = {7, 8, 9, 7, 8, 9};
    cr_assert_eq(memcmp(a.data, bwant, sizeof bwant), 0);
    lk_array_free(&a);
}

Test(npy, write_strided_larger_than_a_chunk)
{
    /* 300000 float64 (2.4 MB) reversed: the gather crosses many chunks. */
    enum { N = 300000 };
    double *buf = malloc(N * sizeof *buf);
    cr_assert_not_null(buf);
    for (int i = 0; i < N; i++)
        buf[i] = i;
    const int64_t shape[1] = {N}, strides[1] = {-1};
    lk_tensor t = {&buf[N - 1], LK_DTYPE_F64, 1, shape, strides};
    lk_array a = write_and_read("big.npy", &t);
    const double *got = a.data;
    cr_assert_eq(a.nbytes, N * sizeof(double));
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], (double)(N - 1 - i), "element %d", i);
    lk_array_free(&a);
    free(buf);
}

Test(npy, write_explicit_c_strides_and_irrelevant_unit_strides)
{
    /* C strides given explicitly, and a size-1 dimension whose stride is
     * arbitrary: both are plain C order. */
    const int64_t v[6] = {1, 2, 3, 4, 5, 6};
    const int64_t shape[3] = {2, 1, 3}, strides[3] = {3, 999, 1};
    lk_tensor t = {(void *)v, LK_DTYPE_I64, 3, shape, strides};
    lk_array a = write_and_read("c.npy", &t);
    assert_shape(&a, LK_DTYPE_I64, 3, shape);
    cr_assert_eq(memcmp(a.data, v, sizeof v), 0);
    lk_array_free(&a);
}

/* ------------------------------------------------------------------------ */
/* Write errors                                                              */

Test(npy, write_refuses_bad_tensors)
{
    char msg[LK_ERRMSG_CAP];
    const float v[2] = {1, 2};
    const int64_t s[1] = {2}, neg[1] = {-2};
    const char *path = tmp("bad.npy");
    lk_tensor t = {(void *)v, 99, 1, s, NULL};
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_DTYPE);
    cr_assert(strstr(msg, path) && strstr(msg, "dtype 99"), "%s", msg);
    t.dtype = LK_DTYPE_F32;
    t.shape = neg;
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "negative"), "%s", msg);
    t.shape = s;
    t.data = NULL;
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "data is NULL"), "%s", msg);
    t.data = (void *)v;
    t.ndim = LK_MAX_NDIM + 1;
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "ndim 17"), "%s", msg);
    cr_assert_eq(lk_npy_write(path, NULL, NULL), LK_ERR_INVALID);
    cr_assert_eq(access(path, F_OK), -1, "a refused write created the file");
}

Test(npy, write_reports_open_failure)
{
    const float v = 1;
    lk_tensor t = {(void *)&v, LK_DTYPE_F32, 0, NULL, NULL};
    char msg[LK_ERRMSG_CAP];
    const char *path = tmp("no/such/dir/x.npy");
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_IO);
    cr_assert(strstr(msg, path) != NULL, "%s", msg);
    cr_assert(strstr(msg, strerror(ENOENT)) != NULL, "%s", msg);
}

Test(npy, write_reports_full_disk)
{
    /* /dev/full accepts the open and fails the buffered write at flush or
     * close: a writer that ignores fclose's status reports success. */
    if (access("/dev/full", W_OK) != 0)
        cr_skip_test("no writable /dev/full");
    const float v[4] = {1, 2, 3, 4};
    const int64_t s[1] = {4};
    lk_tensor t = {(void *)v, LK_DTYPE_F32, 1, s, NULL};
    char msg[LK_ERRMSG_CAP];
    cr_assert_eq(lk_npy_write("/dev/full", &t, msg), LK_ERR_IO);
    cr_assert(strstr(msg, "/dev/full") != NULL, "%s", msg);
    cr_assert(strstr(msg, strerror(ENOSPC)) != NULL, "%s", msg);
}

/* ------------------------------------------------------------------------ */
/* Files written by numpy                                                    */

Test(npy, numpy_float32_2x3)
{
    lk_array a;
    read_ok(FIXTURES "f32_2x3.npy", &a);
    const int64_t s[2] = {2, 3};
    assert_shape(&a, LK_DTYPE_F32, 2, s);
    const float *v = a.data;
    const float want[6] = {0.5f, -1.25f, 3.0f, 0.1f, 1e-3f, -7.0f};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(v[i], want[i], "element %d: %.9g, want %.9g", i, v[i], want[i]);
    lk_array_free(&a);
}

Test(npy, numpy_float64_edges)
{
    lk_array a;
    read_ok(FIXTURES "f64_6.npy", &a);
    const int64_t s[1] = {6};
    assert_shape(&a, LK_DTYPE_F64, 1, s);
    const double *v = a.data;
    cr_assert_eq(v[0], 1.0);
    cr_assert(v[1] == 0.0 && signbit(v[1]), "-0.0 lost its sign");
    cr_assert(isinf(v[2]) && v[2] > 0);
    cr_assert(isnan(v[3]));
    cr_assert_eq(v[4], 1e300);
    cr_assert_eq(v[5], 5e-324);
    lk_array_free(&a);
}

Test(npy, numpy_int64)
{
    lk_array a;
    read_ok(FIXTURES "i64_4.npy", &a);
    const int64_t s[1] = {4};
    assert_shape(&a, LK_DTYPE_I64, 1, s);
    const int64_t *v = a.data;
    cr_assert_eq(v[0], 0);
    cr_assert_eq(v[1], -1);
    cr_assert_eq(v[2], INT64_MAX);
    cr_assert_eq(v[3], INT64_MIN);
    lk_array_free(&a);
}

Test(npy, numpy_int32)
{
    lk_array a;
    read_ok(FIXTURES "i32_2x2.npy", &a);
    const int64_t s[2] = {2, 2};
    assert_shape(&a, LK_DTYPE_I32, 2, s);
    const int32_t *v = a.data;
    cr_assert_eq(v[0], 1);
    cr_assert_eq(v[1], -2);
    cr_assert_eq(v[2], INT32_MAX);
    cr_assert_eq(v[3], INT32_MIN);
    lk_array_free(&a);
}

Test(npy, numpy_uint8)
{
    lk_array a;
    read_ok(FIXTURES "u8_5.npy", &a);
    const int64_t s[1] = {5};
    assert_shape(&a, LK_DTYPE_U8, 1, s);
    const uint8_t want[5] = {0, 1, 127, 128, 255};
    cr_assert_eq(memcmp(a.data, want, 5), 0);
    lk_array_free(&a);
}

Test(npy, numpy_bool)
{
    lk_array a;
    read_ok(FIXTURES "bool_2x2.npy", &a);
    const int64_t s[2] = {2, 2};
    assert_shape(&a, LK_DTYPE_BOOL, 2, s);
    const uint8_t want[4] = {1, 0, 0, 1};
    cr_assert_eq(memcmp(a.data, want, 4), 0);
    lk_array_free(&a);
}

Test(npy, numpy_scalar_and_empty)
{
    lk_array a;
    read_ok(FIXTURES "f64_scalar.npy", &a);
    assert_shape(&a, LK_DTYPE_F64, 0, NULL);
    cr_assert_eq(a.nbytes, 8);
    cr_assert_eq(*(const double *)a.data, 2.5);
    lk_array_free(&a);

    read_ok(FIXTURES "f32_0x3.npy", &a);
    const int64_t s[2] = {0, 3};
    assert_shape(&a, LK_DTYPE_F32, 2, s);
    cr_assert_eq(a.nbytes, 0);
    lk_array_free(&a);
}

Test(npy, numpy_15_dims)
{
    lk_array a;
    read_ok(FIXTURES "f32_15d.npy", &a);
    int64_t s[15];
    for (int i = 0; i < 15; i++)
        s[i] = 1;
    s[0] = 2;
    s[14] = 3;
    assert_shape(&a, LK_DTYPE_F32, 15, s);
    const float want[6] = {0, 1, 2, 3, 4, 5};
    cr_assert_eq(memcmp(a.data, want, sizeof want), 0);
    lk_array_free(&a);
}

Test(npy, numpy_version_2)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "v2_f64_2x2.npy", &len);
    cr_assert_eq(b[6], 2, "the fixture is not a version 2.0 file");
    free(b);
    lk_array a;
    read_ok(FIXTURES "v2_f64_2x2.npy", &a);
    const int64_t s[2] = {2, 2};
    assert_shape(&a, LK_DTYPE_F64, 2, s);
    const double want[4] = {1.5, 2.5, 3.5, 4.5};
    cr_assert_eq(memcmp(a.data, want, sizeof want), 0);
    lk_array_free(&a);
}

Test(npy, numpy_version_3)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "v3_i32_3.npy", &len);
    cr_assert_eq(b[6], 3, "the fixture is not a version 3.0 file");
    free(b);
    lk_array a;
    read_ok(FIXTURES "v3_i32_3.npy", &a);
    const int64_t s[1] = {3};
    assert_shape(&a, LK_DTYPE_I32, 1, s);
    const int32_t want[3] = {7, 8, 9};
    cr_assert_eq(memcmp(a.data, want, sizeof want), 0);
    lk_array_free(&a);
}

/* ------------------------------------------------------------------------ */
/* Refusals of numpy-written files                                           */

Test(npy, refuses_big_endian)
{
    expect_refusal(FIXTURES "be_f4.npy", LK_ERR_DTYPE, "unsupported dtype '>f4' (big-endian)");
}

Test(npy, refuses_fortran_order)
{
    expect_refusal(FIXTURES "fortran_f64.npy", LK_ERR_FORMAT, "fortran_order True");
}

Test(npy, refuses_float16)
{
    expect_refusal(FIXTURES "f16.npy", LK_ERR_DTYPE, "'<f2' (float16)");
}

Test(npy, refuses_complex)
{
    expect_refusal(FIXTURES "c8.npy", LK_ERR_DTYPE, "'<c8' (complex64)");
}

Test(npy, refuses_object)
{
    expect_refusal(FIXTURES "object.npy", LK_ERR_DTYPE, "'|O' (Python objects)");
}

Test(npy, refuses_structured)
{
    expect_refusal(FIXTURES "structured.npy", LK_ERR_DTYPE, "structured");
}

Test(npy, unsupported_dtype_message_lists_what_is_read)
{
    char msg[LK_ERRMSG_CAP];
    lk_array a;
    cr_assert_eq(lk_npy_read(FIXTURES "be_f4.npy", &a, msg), LK_ERR_DTYPE);
    cr_assert(strstr(msg, "losskit reads little-endian float32, float64, int64, int32, uint8, bool"),
              "%s", msg);
}

/* ------------------------------------------------------------------------ */
/* Hand-made malformed files                                                 */

#define F32_HEADER "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n"

Test(npy, refuses_truncated_data)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "f32_2x3.npy", &len);
    const char *path = tmp("trunc.npy");
    write_file(path, b, len - 5);
    free(b);
    expect_refusal(path, LK_ERR_FORMAT, "expected 24 data bytes, found 19");
}

Test(npy, refuses_trailing_bytes)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "f32_2x3.npy", &len);
    unsigned char *c = malloc(len + 3);
    cr_assert_not_null(c);
    memcpy(c, b, len);
    memcpy(c + len, "abc", 3);
    const char *path = tmp("trail.npy");
    write_file(path, c, len + 3);
    free(b);
    free(c);
    expect_refusal(path, LK_ERR_FORMAT, "3 trailing bytes after the 24 data bytes");
}

Test(npy, refuses_bad_magic)
{
    const char *path = tmp("magic.npy");
    write_file(path, "PK\x03\x04 this is a zip file", 24);
    expect_refusal(path, LK_ERR_FORMAT, "not a .npy file (bad magic");
    write_file(path, "\x93NUM", 4);
    expect_refusal(path, LK_ERR_FORMAT, "bad magic");
    write_file(path, "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "the file is empty");
}

Test(npy, refuses_unknown_version)
{
    const char *path = tmp("ver.npy");
    write_npy_raw(path, 4, F32_HEADER, "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "unsupported .npy format version 4.0");
    write_file(path, "\x93NUMPY\x01\x01\x02\x00{}", 12);
    expect_refusal(path, LK_ERR_FORMAT, "version 1.1");
}

Test(npy, refuses_garbage_header)
{
    const char *path = tmp("garbage.npy");
    write_npy_raw(path, 1, "hello, world                                         \n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "malformed .npy header at byte 10: expected '{'");
    /* Python code, not a literal. */
    write_npy_raw(path, 1, "{'descr': __import__('os'), 'fortran_order': False, 'shape': ()}\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "expected a quoted string");
    /* Something after the dict. */
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "after the header dict");
    /* A NUL inside the header. */
    write_file(path, "\x93NUMPY\x01\x00\x05\x00{'a\0'", 15);
    expect_refusal(path, LK_ERR_FORMAT, "malformed .npy header");
}

Test(npy, refuses_header_length_past_eof)
{
    const char *path = tmp("hlen.npy");
    /* Header length 1000 in a file that has 20 bytes after the field. */
    write_file(path, "\x93NUMPY\x01\x00\xe8\x03{'descr': '<f4', 'fo", 30);
    expect_refusal(path, LK_ERR_FORMAT, "header length 1000 runs past the end of the file");
    /* The 4-byte field of 2.0 at its maximum: no allocation of 4 GB. */
    write_file(path, "\x93NUMPY\x02\x00\xff\xff\xff\xff{}\n", 15);
    expect_refusal(path, LK_ERR_FORMAT, "header length 4294967295 runs past the end");
    /* The length field itself is cut short. */
    write_file(path, "\x93NUMPY\x02\x00\x10", 9);
    expect_refusal(path, LK_ERR_FORMAT, "the header length needs 4 bytes, found 1");
}

Test(npy, refuses_bool_value_2)
{
    const char *path = tmp("bool2.npy");
    const uint8_t data[5] = {0, 1, 1, 2, 0};
    write_npy_raw(path, 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (5,), }\n", data, 5);
    expect_refusal(path, LK_ERR_FORMAT, "bool element 3 has value 2");
}

Test(npy, refuses_shape_whose_size_overflows)
{
    const char *path = tmp("huge.npy");
    write_npy_raw(path, 1,
                  "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "size in bytes overflows");
    /* The count fits int64, the bytes do not. */
    write_npy_raw(path, 1,
                  "{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "size in bytes overflows");
    /* An empty array still needs a representable size, as in numpy. */
    write_npy_raw(path, 1,
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (0, 4611686018427387904, 4611686018427387904), }\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "size in bytes overflows");
    /* A single dimension beyond int64. */
    write_npy_raw(path, 1,
                  "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "does not fit int64");
    /* Valid size but far more than the file holds: refused before any
     * allocation, with the counts. */
    write_npy_raw(path, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000,), }\n",
                  "ab", 2);
    expect_refusal(path, LK_ERR_FORMAT, "expected 1000000000000 data bytes, found 2");
}

Test(npy, refuses_bad_shapes)
{
    const char *path = tmp("shape.npy");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "negative dimension -3");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "is not a tuple");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [5], }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "expected '(' to open the 'shape' tuple");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,3), }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "expected a dimension");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2x,), }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "unexpected 'x' after a dimension");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "expected ',' or ')'");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "found the end of the header");
    write_npy_raw(path, 1,
                  "{'descr': '<f4', 'fortran_order': False, "
                  "'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "more than 16 dimensions");
}

Test(npy, refuses_bad_keys)
{
    const char *path = tmp("keys.npy");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False}\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "no 'shape' key");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'extra': 1}\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "unknown key 'extra'");
    write_npy_raw(path, 1, "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': ()}\n",
                  "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "duplicate key 'descr'");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': ()}\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "'fortran_order' must be True or False");
    write_npy_raw(path, 1, "{'descr' '<f4', 'fortran_order': False, 'shape': ()}\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "expected ':' after a key");
    write_npy_raw(path, 1, "{'descr': '<f4\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "unterminated string");
    write_npy_raw(path, 1, "{'descr': '<\\x66\\x34', 'fortran_order': False, 'shape': ()}\n", "",
                  0);
    expect_refusal(path, LK_ERR_FORMAT, "escape sequences");
}

Test(npy, refuses_unsupported_dtypes_by_name)
{
    const char *path = tmp("dt.npy");
    write_npy_raw(path, 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (), }\n", "ab", 2);
    expect_refusal(path, LK_ERR_DTYPE, "'<i2' (int16)");
    write_npy_raw(path, 1, "{'descr': '>i8', 'fortran_order': False, 'shape': (), }\n", "", 0);
    expect_refusal(path, LK_ERR_DTYPE, "'>i8' (big-endian)");
    write_npy_raw(path, 1, "{'descr': '<U3', 'fortran_order': False, 'shape': (), }\n", "", 0);
    expect_refusal(path, LK_ERR_DTYPE, "'<U3' (unicode strings)");
    write_npy_raw(path, 1, "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (), }\n", "", 0);
    expect_refusal(path, LK_ERR_DTYPE, "datetime64");
    write_npy_raw(path, 1, "{'descr': '\x1b[31mred', 'fortran_order': False, 'shape': (), }\n", "",
                  0);
    expect_refusal(path, LK_ERR_DTYPE, "'\\x1b[31mred'");
    write_npy_raw(path, 1, "{'descr': '', 'fortran_order': False, 'shape': (), }\n", "", 0);
    expect_refusal(path, LK_ERR_DTYPE, "unsupported dtype ''");
}

/* Bytes of the header are quoted as they are, control characters escaped
 * as \xHH (docs/errors.md), never replaced by '?': a NUL too. */
Test(npy, control_bytes_in_the_header_are_escaped)
{
    const char *path = tmp("ctrl.npy");
    write_npy_raw(path, 1, "{'descr': '<f4\x1b[31m', 'fortran_order': False, 'shape': (), }\n",
                  "abcd", 4);
    expect_refusal(path, LK_ERR_DTYPE,
                   "unsupported dtype '<f4\\x1b[31m': unexpected '\\x1b[31m' after '<f4' (NumPy "
                   "writes '<f4')");
    static const char nul_header[] = "{'descr': '<i2\0\x7f', 'fortran_order': False, 'shape': ()}\n";
    static const char data[2] = {0, 0};
    size_t hl = sizeof nul_header - 1;
    unsigned char b[10 + sizeof nul_header + 2];
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (unsigned char)hl;
    b[9] = 0;
    memcpy(b + 10, nul_header, hl);
    memcpy(b + 10 + hl, data, 2);
    write_file(path, b, 10 + hl + 2);
    expect_refusal(path, LK_ERR_DTYPE, "unsupported dtype '<i2\\x00\\x7f' (int16)");
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'sha\tpe': ()}\n", "", 0);
    expect_refusal(path, LK_ERR_FORMAT, "unknown key 'sha\\tpe'");
}

/* A multi-byte dtype must say little-endian ('<', as NumPy writes it): the
 * message names the byte-order character that is wrong, or the bytes
 * around the dtype. */
Test(npy, byte_order_character_is_named)
{
    const char *path = tmp("order.npy");
    static const struct {
        const char *header, *reason;
    } cases[] = {
        {"{'descr': '=f4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '=f4': byte order '=' (the native order of the machine that wrote "
         "it) is not accepted for a multi-byte type; losskit reads '<f4' (little-endian float32, "
         "as NumPy writes it)"},
        {"{'descr': '|f4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '|f4': byte order '|' (not applicable) is not accepted for a "
         "multi-byte type; losskit reads '<f4' (little-endian float32, as NumPy writes it)"},
        {"{'descr': 'f4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype 'f4': it has no byte-order character; losskit reads '<f4' "
         "(little-endian float32, as NumPy writes it)"},
        {"{'descr': '<f4 ', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '<f4 ': unexpected ' ' after '<f4' (NumPy writes '<f4')"},
        {"{'descr': ' <f4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype ' <f4': unexpected ' ' before '<f4' (NumPy writes '<f4')"},
        {"{'descr': '=i8', 'fortran_order': False, 'shape': (), }\n",
         "byte order '=' (the native order of the machine that wrote it) is not accepted for a multi-byte type; losskit reads '<i8' (little-endian int64"},
        {"{'descr': '|f8', 'fortran_order': False, 'shape': (), }\n",
         "losskit reads '<f8' (little-endian float64, as NumPy writes it)"},
        {"{'descr': 'i4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype 'i4': it has no byte-order character; losskit reads '<i4'"},
        /* big-endian stays big-endian; what losskit does not read at all
         * stays named by its type */
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '>f4' (big-endian); losskit reads little-endian"},
        {"{'descr': '=f2', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '=f2' (float16); losskit reads little-endian"},
        {"{'descr': '|i1', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '|i1' (int8); losskit reads little-endian"},
        {"{'descr': '<b2', 'fortran_order': False, 'shape': (), }\n",
         "unsupported dtype '<b2' (bool of 2 bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_npy_raw(path, 1, cases[i].header, "abcdefgh", 8);
        expect_refusal(path, LK_ERR_DTYPE, cases[i].reason);
    }
}

/* A 1-byte type has no byte order: '<', '>', '|', '=' and none all mean the
 * same bytes (NumPy writes '|u1' and '|b1'). */
Test(npy, one_byte_types_take_any_byte_order)
{
    const char *path = tmp("onebyte.npy");
    static const char *const orders[] = {"<", ">", "|", "=", ""};
    static const struct {
        const char *kind;
        int32_t dtype;
    } kinds[] = {{"u1", LK_DTYPE_U8}, {"b1", LK_DTYPE_BOOL}};
    const int64_t s[1] = {3};
    for (size_t k = 0; k < 2; k++)
        for (size_t o = 0; o < sizeof orders / sizeof orders[0]; o++) {
            char header[128];
            snprintf(header, sizeof header,
                     "{'descr': '%s%s', 'fortran_order': False, 'shape': (3,), }\n", orders[o],
                     kinds[k].kind);
            static const unsigned char data[3] = {1, 0, 1};
            write_npy_raw(path, 1, header, data, 3);
            lk_array a;
            char msg[LK_ERRMSG_CAP] = "";
            cr_assert_eq(lk_npy_read(path, &a, msg), LK_OK, "%s: %s", header, msg);
            assert_shape(&a, kinds[k].dtype, 1, s);
            cr_assert_eq(memcmp(a.data, data, 3), 0, "%s", header);
            lk_array_free(&a);
        }
}

/* A path too long to leave room in a message (LK_ERRMSG_CAP bytes) is
 * shown with its middle left out: the start, "...", its last components,
 * and then always the whole problem. */
static void long_dir(char *dir, size_t cap, size_t *depth)
{
    snprintf(dir, cap, "%s", tmpdir);
    *depth = 0;
    while (strlen(dir) < 460) {
        size_t n = strlen(dir);
        snprintf(dir + n, cap - n, "/experiment_run_2024_12_06_lr0.001_batch64_%zu", ++*depth);
        cr_assert(mkdir(dir, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
    }
}

static void remove_long_dir(char *dir, size_t depth)
{
    for (size_t i = 0; i < depth; i++) {
        rmdir(dir);
        *strrchr(dir, '/') = '\0';
    }
}

Test(npy, long_paths_are_shortened_in_the_middle)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    size_t depth;
    long_dir(dir, sizeof dir, &depth);
    snprintf(path, sizeof path, "%s/input.npy", dir);
    write_file(path, "not a .npy file at all", 22);
    lk_array a;
    char msg[LK_ERRMSG_CAP];
    cr_assert_eq(lk_npy_read(path, &a, msg), LK_ERR_FORMAT);
    const char *end = "_batch64_10/input.npy: not a .npy file (bad magic: it does not start with "
                      "\\x93NUMPY)";
    size_t len = strlen(msg);
    cr_assert(len > strlen(end) && strcmp(msg + len - strlen(end), end) == 0,
              "the problem is cut: %s", msg);
    cr_assert(strncmp(msg, tmpdir, 10) == 0, "the start of the path is missing: %s", msg);
    cr_assert(strstr(msg, "/.../") != NULL, "no '...' where the middle was left out: %s", msg);
    cr_assert(len < 300, "%s", msg);
    /* writing too */
    float v = 1;
    lk_tensor t = {&v, LK_DTYPE_F32, 0, NULL, NULL};
    snprintf(path, sizeof path, "%s/no-such-dir/output.npy", dir);
    cr_assert_eq(lk_npy_write(path, &t, msg), LK_ERR_IO);
    char want[256];
    snprintf(want, sizeof want, "/no-such-dir/output.npy: cannot open for writing: %s",
             strerror(ENOENT));
    len = strlen(msg);
    cr_assert(strcmp(msg + len - strlen(want), want) == 0, "the problem is cut: %s", msg);
    snprintf(path, sizeof path, "%s/input.npy", dir);
    unlink(path);
    remove_long_dir(dir, depth);
}

Test(npy, refuses_missing_and_unreadable_files)
{
    expect_refusal(tmp("does-not-exist.npy"), LK_ERR_IO, strerror(ENOENT));
    expect_refusal(tmpdir, LK_ERR_IO, strerror(EISDIR));
}

Test(npy, message_is_one_line_even_for_odd_paths)
{
    /* A newline in the file name must not split the message. */
    const char *path = tmp("odd\nname.npy");
    write_file(path, "not numpy", 9);
    lk_array a;
    char msg[LK_ERRMSG_CAP];
    cr_assert_eq(lk_npy_read(path, &a, msg), LK_ERR_FORMAT);
    cr_assert(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
    cr_assert(strstr(msg, "odd\\nname.npy: not a .npy file") != NULL, "%s", msg);
}

Test(npy, null_arguments_and_null_errmsg)
{
    lk_array a;
    cr_assert_eq(lk_npy_read(NULL, &a, NULL), LK_ERR_INVALID);
    cr_assert_eq(lk_npy_read(FIXTURES "f64_6.npy", NULL, NULL), LK_ERR_INVALID);
    /* errmsg may be NULL on every path. */
    cr_assert_eq(lk_npy_read(FIXTURES "be_f4.npy", &a, NULL), LK_ERR_DTYPE);
    cr_assert_eq(lk_npy_read(tmp("absent.npy"), &a, NULL), LK_ERR_IO);
    cr_assert(all_zero(&a, sizeof a));
}

/* ------------------------------------------------------------------------ */
/* Tolerance: what Python accepts as the same dict                           */

Test(npy, tolerant_header_syntax)
{
    const char *path = tmp("tol.npy");
    const float v[6] = {1, 2, 3, 4, 5, 6};
    static const char *const headers[] = {
        /* any key order, double quotes, no trailing comma */
        "{\"shape\": (2, 3), \"fortran_order\": False, \"descr\": \"<f4\"}",
        /* whitespace and newlines everywhere, trailing commas */
        "{ \t'fortran_order' :False ,\n 'shape':( 2 ,3 , ) ,'descr':'<f4',}   \n",
        /* Python 2 numpy wrote longs */
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n",
    };
    const int64_t s[2] = {2, 3};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        write_npy_raw(path, 1, headers[i], v, sizeof v);
        lk_array a;
        read_ok(path, &a);
        assert_shape(&a, LK_DTYPE_F32, 2, s);
        cr_assert_eq(memcmp(a.data, v, sizeof v), 0, "header %zu", i);
        lk_array_free(&a);
    }
    /* '<u1' is uint8 too; shape () holds one element. */
    write_npy_raw(path, 1, "{'descr': '<u1', 'fortran_order': False, 'shape': ()}", "\xfe", 1);
    lk_array a;
    read_ok(path, &a);
    assert_shape(&a, LK_DTYPE_U8, 0, NULL);
    cr_assert_eq(*(const uint8_t *)a.data, 0xfe);
    lk_array_free(&a);
}

/* ------------------------------------------------------------------------ */
/* Non-regular files are refused: only a regular file's size bounds what a
 * header may claim before anything is allocated (issue 14). */

Test(npy, refuses_a_pipe)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "f32_2x3.npy", &len);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    cr_assert_eq(write(fds[1], b, len), (ssize_t)len); /* fits the pipe buffer */
    close(fds[1]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
    lk_array a;
    char msg[LK_ERRMSG_CAP] = "";
    lk_status st = lk_npy_read(path, &a, msg);
    close(fds[0]);
    free(b);
    cr_assert_eq(st, LK_ERR_IO, "status %d: %s", st, msg);
    char want[128];
    snprintf(want, sizeof want, "%s: cannot open: not a regular file (it is a FIFO)", path);
    cr_assert_str_eq(msg, want);
    cr_assert(all_zero(&a, sizeof a));
}

/* ------------------------------------------------------------------------ */
/* Robustness: every truncation and many mutations of a valid file are
 * either read consistently or refused cleanly (run under valgrind too). */

static void check_outcome(const char *path)
{
    lk_array a;
    char msg[LK_ERRMSG_CAP];
    msg[0] = '\0';
    lk_status st = lk_npy_read(path, &a, msg);
    if (st == LK_OK) {
        cr_assert_not_null(a.data);
        cr_assert_neq(lk_dtype_size(a.dtype), 0);
        cr_assert(a.ndim >= 0 && a.ndim <= LK_MAX_NDIM);
        size_t count = 1;
        for (int32_t i = 0; i < a.ndim; i++)
            count *= (size_t)a.shape[i];
        cr_assert_eq(a.nbytes, count * lk_dtype_size(a.dtype));
        lk_array_free(&a);
        return;
    }
    cr_assert(st == LK_ERR_FORMAT || st == LK_ERR_DTYPE || st == LK_ERR_NOMEM,
              "status %d: %s", st, msg);
    cr_assert(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    cr_assert(strchr(msg, '\n') == NULL);
    cr_assert(all_zero(&a, sizeof a));
}

Test(npy, every_truncation_is_refused)
{
    size_t len;
    unsigned char *b = slurp(FIXTURES "bool_2x2.npy", &len);
    const char *path = tmp("cut.npy");
    for (size_t n = 0; n < len; n++) {
        write_file(path, b, n);
        lk_array a;
        cr_assert_neq(lk_npy_read(path, &a, NULL), LK_OK, "a file cut at %zu bytes was read", n);
        check_outcome(path);
    }
    free(b);
}

Test(npy, mutations_never_crash)
{
    size_t len;
    unsigned char *orig = slurp(FIXTURES "i32_2x2.npy", &len);
    unsigned char *b = malloc(len);
    cr_assert_not_null(b);
    const char *path = tmp("mut.npy");
    static const unsigned char interesting[] = {0,   '\n', ' ', '\'', '"', '(', ')', ',', ':',
                                                '{', '}',  '-', '9',  'L', 'T', 0x7f, 0xff};
    /* Every header byte replaced by every interesting byte. */
    for (size_t i = 0; i < 128 && i < len; i++)
        for (size_t k = 0; k < sizeof interesting; k++) {
            memcpy(b, orig, len);
            b[i] = interesting[k];
            write_file(path, b, len);
            check_outcome(path);
        }
    /* And random multi-byte damage with a fixed seed. */
    uint32_t seed = 12345;
    for (int round = 0; round < 300; round++) {
        memcpy(b, orig, len);
        for (int j = 0; j < 4; j++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            b[at] = (unsigned char)(seed >> 16);
        }
        write_file(path, b, len);
        check_outcome(path);
    }
    free(b);
    free(orig);
}
