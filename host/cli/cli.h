/* cli.h: what the losskit command's files share. */
#ifndef LOSSKIT_CLI_H
#define LOSSKIT_CLI_H

#include "losskit/losskit.h"

/* Exit codes: a contract that scripts rely on (README.md). */
enum {
    EXIT_OK = 0,
    EXIT_FAILURE_INTERNAL = 1,
    EXIT_USAGE = 2,  /* bad usage or config */
    EXIT_PLUGIN = 3, /* a plugin could not be loaded */
    EXIT_DATA = 4    /* a tensor file or the data in it */
};

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
void cli_error(const char *fmt, ...);

/* Opens the runtime, printing load diagnostics as warnings; threads 0 picks
 * the default. Returns NULL (after printing why) on failure. */
lk_runtime *cli_open_runtime(int32_t threads);
/* The exit status after cli_open_runtime failed: EXIT_USAGE for a bad
 * setting (LOSSKIT_THREADS), else EXIT_FAILURE_INTERNAL. */
int cli_open_failed(void);

/* Prints a JSON tree on stdout (indented when formatted), every string and
 * key made well-formed UTF-8 first (U+FFFD for each stray byte: a file name
 * may hold any byte, JSON may not). */
struct cJSON;
void cli_print_json(struct cJSON *root, int formatted);

/* The exit status for a failed call of the library: out of memory and
 * internal errors are 1, everything else a data problem (docs/errors.md). */
int cli_exit_for(lk_status st);

/* Parses a positive integer option value; -1 on error (printed). */
int32_t cli_parse_threads(const char *text);
/* "CMD: unknown option 'X'; did you mean 'Y'?" on stderr. */
void cli_unknown_option(const char *cmd, const char *opt);

int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_new(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
