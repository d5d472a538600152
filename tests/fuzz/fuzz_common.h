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

/* The length of the well-formed UTF-8 sequence at s, or 0 (written apart
 * from the library's, so that the check does not share its mistakes). */
static inline size_t fuzz_utf8_len(const unsigned char *s)
{
    unsigned cp;
    size_t n;
    if (s[0] >= 0xc0 && s[0] < 0xe0)
        n = 2, cp = s[0] & 0x1fu;
    else if (s[0] >= 0xe0 && s[0] < 0xf0)
        n = 3, cp = s[0] & 0x0fu;
    else if (s[0] >= 0xf0 && s[0] < 0xf8)
        n = 4, cp = s[0] & 0x07u;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0u) != 0x80u)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    static const unsigned least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Every error is one line without control characters (docs/errors.md):
 * no byte below 0x20, no 0x7f, no C1 control (a byte 0x80-0x9f outside
 * well-formed UTF-8, or U+0080-U+009F). */
static inline void fuzz_check_message(const char *msg)
{
    size_t n = strnlen(msg, 1u << 16);
    FUZZ_REQUIRE(n < (1u << 16));
    const unsigned char *s = (const unsigned char *)msg;
    for (size_t i = 0; i < n;) {
        FUZZ_REQUIRE(s[i] >= 0x20 && s[i] != 0x7f);
        size_t len = s[i] >= 0x80 ? fuzz_utf8_len(s + i) : 0;
        if (len > 0) {
            FUZZ_REQUIRE(!(len == 2 && s[i] == 0xc2 && s[i + 1] <= 0x9f));
            i += len;
        } else {
            FUZZ_REQUIRE(!(s[i] >= 0x80 && s[i] <= 0x9f));
            i++;
        }
    }
}

#endif
