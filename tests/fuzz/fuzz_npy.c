/* The .npy reader on arbitrary bytes. The bytes are a regular file (a
 * memfd, read through /proc/self/fd, as lk_npy_read takes a path): the
 * reader under test is exactly the library's, size checks included. A read
 * that succeeds must describe its data consistently. */
#define _GNU_SOURCE /* memfd_create */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "losskit/losskit.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        fd = memfd_create("fuzz.npy", 0);
        FUZZ_REQUIRE(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_REQUIRE(ftruncate(fd, 0) == 0);
    FUZZ_REQUIRE(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
    lk_array a;
    char msg[LK_ERRMSG_CAP] = "";
    lk_status st = lk_npy_read(path, &a, msg);
    if (st != LK_OK) {
        FUZZ_REQUIRE(msg[0] != '\0' && a.data == NULL);
        fuzz_check_message(msg);
        return 0;
    }
    /* the data fits the file, and its size is shape x element size */
    size_t n = 1;
    FUZZ_REQUIRE(a.ndim >= 0 && a.ndim <= LK_MAX_NDIM);
    for (int32_t i = 0; i < a.ndim; i++) {
        FUZZ_REQUIRE(a.shape[i] >= 0);
        n *= (size_t)a.shape[i];
    }
    FUZZ_REQUIRE(a.nbytes == n * lk_dtype_size(a.dtype) && a.nbytes <= size);
    /* every byte is readable (ASan checks the bounds) */
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < a.nbytes; i++)
        sink ^= ((const unsigned char *)a.data)[i];
    (void)sink;
    lk_array_free(&a);
    return 0;
}
