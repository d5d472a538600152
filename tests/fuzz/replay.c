/* Replays files through a fuzz target's LLVMFuzzerTestOneInput, without
 * libFuzzer: every argument is a file or a folder of files (read in name
 * order). A meson test runs it over the target's regression folder (the
 * inputs that once failed, each fixed) and its seed corpus, in every build;
 * under -Db_sanitize=address,undefined a memory error is a failure. */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                fclose(f);
                free(buf);
                return 1;
            }
            buf = grown;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    /* an exact-size copy, so that a read past the input is caught */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return 1;
    }
    if (len)
        memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int failed = 0, files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed |= replay_file(argv[i]);
            files++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, NULL);
        if (n < 0) {
            perror(argv[i]);
            return 1;
        }
        char **paths = calloc((size_t)n, sizeof *paths);
        int k = 0;
        for (int j = 0; j < n; j++) {
            if (names[j]->d_name[0] != '.' && paths) {
                size_t len = strlen(argv[i]) + strlen(names[j]->d_name) + 2;
                if ((paths[k] = malloc(len)) != NULL)
                    snprintf(paths[k++], len, "%s/%s", argv[i], names[j]->d_name);
            }
            free(names[j]);
        }
        free(names);
        if (!paths)
            return 1;
        qsort(paths, (size_t)k, sizeof *paths, cmp);
        for (int j = 0; j < k; j++) {
            fprintf(stderr, "replay %s\n", paths[j]);
            failed |= replay_file(paths[j]);
            files++;
            free(paths[j]);
        }
        free(paths);
    }
    fprintf(stderr, "%d inputs replayed\n", files);
    return failed;
}
