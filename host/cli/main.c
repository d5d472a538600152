/* main.c: the losskit command: subcommand dispatch and shared helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: losskit <command> [options]\n"
    "\n"
    "commands:\n"
    "  list [--json]                 the registered losses\n"
    "  info LOSS [--json]            a loss's parameters, tensor slots and reductions\n"
    "  run CONFIG --input X.npy [--target T.npy] [--weight W.npy]\n"
    "      [--tensor NAME=FILE.npy ...] [--grad G.npy] [--grad-tensor NAME=FILE.npy ...]\n"
    "      [--out L.npy] [--threads N] [--json]\n"
    "                                evaluate the loss a JSON config describes\n"
    "  new NAME [--elementwise] [--dir DIR]\n"
    "                                write an out-of-tree plugin project to start from\n"
    "                                (a two-pass loss, or with --elementwise an\n"
    "                                elementwise one)\n"
    "  check PLUGIN.so [--loss ID] [--json]\n"
    "                                a conformance report on a plugin's losses\n"
    "  bench CONFIG [--shape N,C,H,W] [--dtype float32|float64] [--threads N]\n"
    "      [--repeat K] [--json]\n"
    "                                time forward and forward+backward against the\n"
    "                                memory roofline on synthetic data\n"
    "  help                          this text\n"
    "  version                       the version of losskit and of its plugin ABI\n"
    "\n"
    "environment: LOSSKIT_PLUGIN_PATH (colon-separated plugin folders or files,\n"
    "searched before the built-in plugins), LOSSKIT_THREADS.\n"
    "exit status: 0 ok, 2 bad usage or config, 3 plugin load problem, 4 data problem.\n";

/* One line on stderr whatever the message holds: what comes from a config,
 * a file name, an argument or a plugin may carry a newline or a terminal
 * escape, so control characters are written escaped (\n, \r, \t, and \xHH
 * for the others and 0x7f: ESC is \x1b). The runtime's messages arrive
 * escaped already; escaping has nothing left to do on them. */
void cli_error(const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    char small[1024];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    char *text = small;
    if (n >= (int)sizeof small && (text = malloc((size_t)n + 1)) != NULL)
        vsnprintf(text, (size_t)n + 1, fmt, again);
    va_end(again);
    if (!text)
        text = small; /* cut, but still a message */
    fputs("losskit: ", stderr);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c >= 0x20 && *c != 0x7f)
            fputc(*c, stderr);
        else if (*c == '\n')
            fputs("\\n", stderr);
        else if (*c == '\r')
            fputs("\\r", stderr);
        else if (*c == '\t')
            fputs("\\t", stderr);
        else
            fprintf(stderr, "\\x%02x", (unsigned)*c);
    }
    fputc('\n', stderr);
    if (text != small)
        free(text);
}

int32_t cli_parse_threads(const char *text)
{
    char *end;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || !*text || *end || v < 1 || v > 1024) {
        cli_error("--threads: '%s' is not a thread count in [1, 1024]", text ? text : "");
        return -1;
    }
    return (int32_t)v;
}

lk_runtime *cli_open_runtime(int32_t threads)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.threads = threads;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    if (lk_runtime_open(&opts, &rt, err) != LK_OK) {
        cli_error("%s", err);
        return NULL;
    }
    for (size_t i = 0; i < lk_runtime_diag_count(rt); i++)
        cli_error("warning: plugin not loaded: %s", lk_runtime_diag(rt, i));
    return rt;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "list") == 0)
        return cmd_list(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "new") == 0)
        return cmd_new(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("losskit %s (plugin ABI %d.%d)\n", LK_VERSION_STRING, LK_ABI_MAJOR, LK_ABI_MINOR);
        return EXIT_OK;
    }
    cli_error("unknown command '%s'; run 'losskit help'", cmd);
    return EXIT_USAGE;
}
