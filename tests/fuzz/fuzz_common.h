/* fuzz_common.h: what the fuzz targets share. Each target defines
 * LLVMFuzzerTestOneInput; libFuzzer drives it (a clang build with
 * -Dfuzz=enabled), and replay.c replays files through it in every build
 * (the regression and seed folders, as a meson test). */
#ifndef LOSSKIT_FUZZ_COMMON_H
#define LOSSKIT_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise of the library (a message that is not one line, a
 * status that contradicts the output): a crash, which libFuzzer reports
 * and saves like any other. */
#define FUZZ_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Every error is one line without control characters (docs/errors.md):
 * no byte below 0x20, no 0x7f, and no C1 byte 0x80-0x9f outside UTF-8 (a
 * well-formed sequence's continuation bytes are 0x80-0xbf, so only a stray
 * one or U+0080-U+009F would show here: lead c2, then 80-9f). */
static inline void fuzz_check_message(const char *msg)
{
    size_t n = strnlen(msg, 1u << 16);
    FUZZ_REQUIRE(n < (1u << 16));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)msg[i];
        FUZZ_REQUIRE(c >= 0x20 && c != 0x7f);
        FUZZ_REQUIRE(!(c == 0xc2 && i + 1 < n && (unsigned char)msg[i + 1] <= 0x9f));
    }
}

#endif
