/* main.c: the losskit command: subcommand dispatch and shared helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "internal.h" /* lk__escape, compiled into the command too */

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
    "  check PLUGIN.so [--loss ID] [--pairs] [--json]\n"
    "  check --all [--loss ID] [--pairs]\n"
    "                                a conformance report on a plugin's losses, or on\n"
    "                                every plugin on the search path\n"
    "  bench CONFIG [--shape N,C,H,W] [--dtype float32|float64] [--threads N]\n"
    "      [--repeat K] [--json]\n"
    "                                time forward and forward+backward against the\n"
    "                                memory roofline on synthetic data\n"
    "  help [COMMAND]                this text, or one command's (also COMMAND --help)\n"
    "  version                       the version of losskit and of its plugin ABI\n"
    "\n"
    "environment: LOSSKIT_PLUGIN_PATH (colon-separated plugin folders or files,\n"
    "searched before the built-in plugins), LOSSKIT_THREADS.\n"
    "exit status: 0 ok, 1 out of memory or an internal error (for check: a check\n"
    "failed), 2 bad usage or config, 3 plugin load problem, 4 data problem.\n";

/* One line on stderr whatever the message holds: what comes from a config,
 * a file name, an argument or a plugin may carry a newline or a terminal
 * escape, so control characters are written escaped as the runtime writes
 * them (lk__escape: \n, \r, \t, \xHH for the other C0 bytes, 0x7f and the
 * C1 controls; ESC is \x1b). The runtime's messages arrive escaped already;
 * escaping has nothing left to do on them. */
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
        text = small;                             /* cut, but still a message */
    size_t len = strlen(text), cap = 4 * len + 1; /* an escape is at most 4 bytes a byte */
    char shown_small[4 * sizeof small + 1];
    char *shown = cap <= sizeof shown_small ? shown_small : malloc(cap);
    if (!shown) {
        shown = shown_small;
        cap = sizeof shown_small;
    }
    lk__escape(shown, cap, text);
    fprintf(stderr, "losskit: %s\n", shown);
    if (shown != shown_small)
        free(shown);
    if (text != small)
        free(text);
}

/* The length of the well-formed UTF-8 sequence at s, or 0 when the byte at
 * s does not start one (a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF, a cut sequence). */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xc2 && c <= 0xdf   ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    if (n == 0)
        return 0;
    unsigned lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* A malloc'd copy of s with each byte that is not part of well-formed UTF-8
 * replaced by U+FFFD, or NULL when s is well-formed (or memory runs out). */
static char *utf8_repaired(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), bad = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(u + i);
        bad += n == 0;
        i += n ? n : 1;
    }
    char *fixed = bad ? cJSON_malloc(len + 2 * bad + 1) : NULL;
    if (!fixed)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(u + i);
        if (n) {
            memcpy(fixed + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(fixed + o, "\xef\xbf\xbd", 3); /* U+FFFD */
            o += 3;
            i++;
        }
    }
    fixed[o] = '\0';
    return fixed;
}

/* Makes every string and key of a JSON tree well-formed UTF-8: a file name
 * or a plugin's text may hold any byte, and JSON must be UTF-8 (cJSON
 * copies bytes as they are). */
static void json_repair(cJSON *item)
{
    for (; item; item = item->next) {
        char *fixed;
        if (item->string && !(item->type & cJSON_StringIsConst) &&
            (fixed = utf8_repaired(item->string)) != NULL) {
            cJSON_free(item->string);
            item->string = fixed;
        }
        if (cJSON_IsString(item) && item->valuestring &&
            (fixed = utf8_repaired(item->valuestring)) != NULL) {
            cJSON_free(item->valuestring);
            item->valuestring = fixed;
        }
        json_repair(item->child);
    }
}

void cli_print_json(cJSON *root, int formatted)
{
    json_repair(root);
    char *text = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    if (text)
        puts(text);
    else
        cli_error("out of memory printing the JSON output");
    cJSON_free(text);
}

int cli_exit_for(lk_status st)
{
    return st == LK_ERR_NOMEM || st == LK_ERR_INTERNAL ? EXIT_FAILURE_INTERNAL : EXIT_DATA;
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

static int open_exit = EXIT_FAILURE_INTERNAL;

int cli_open_failed(void)
{
    return open_exit;
}

lk_runtime *cli_open_runtime(int32_t threads)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.threads = threads;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_status st = lk_runtime_open(&opts, &rt, err);
    if (st != LK_OK) {
        cli_error("%s", err);
        open_exit = st == LK_ERR_INVALID ? EXIT_USAGE : EXIT_FAILURE_INTERNAL;
        return NULL;
    }
    for (size_t i = 0; i < lk_runtime_diag_count(rt); i++)
        cli_error("warning: plugin not loaded: %s", lk_runtime_diag(rt, i));
    return rt;
}

/* Each command: its usage (the lines of usage_text that describe it) and
 * its options, for `losskit CMD --help` and the "did you mean" of an
 * unknown option or command. */
typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
    const char *const options[12];
} command;

static const command commands[] = {
    {"list",
     cmd_list,
     "losskit list [--json]\n  the registered losses, with their plugins\n",
     {"--json"}},
    {"info",
     cmd_info,
     "losskit info LOSS [--json]\n  a loss's parameters, tensor slots and reductions\n",
     {"--json"}},
    {"run",
     cmd_run,
     "losskit run CONFIG --input X.npy [--target T.npy] [--weight W.npy]\n"
     "    [--tensor NAME=FILE.npy ...] [--grad G.npy] [--grad-tensor NAME=FILE.npy ...]\n"
     "    [--out L.npy] [--threads N] [--json]\n"
     "  evaluate the loss a JSON config describes; prints what it computed and the value\n"
     "\n"
     "  --tensor NAME=FILE.npy       the tensor NAME (repeatable): a slot of the loss, or a\n"
     "                               name a term of the config binds a slot to with\n"
     "                               \"tensors\": {\"input\": \"logits_x2\", ...} (deep\n"
     "                               supervision, several heads); --input X, --target T and\n"
     "                               --weight W are short for --tensor input=X, target=T,\n"
     "                               weight=W\n"
     "  --grad-tensor NAME=FILE.npy  write the gradient of tensor NAME (repeatable); when\n"
     "                               several terms read NAME it is the sum of theirs;\n"
     "                               --grad G is short for --grad-tensor input=G\n"
     "  --out L.npy                  reduction none: the per-position losses\n"
     "  --json                       one JSON object: loss, value, terms, and \"grads\", the\n"
     "                               file written for each tensor name\n",
     {"--input", "--target", "--weight", "--tensor", "--grad", "--grad-tensor", "--out",
      "--threads", "--json"}},
    {"new",
     cmd_new,
     "losskit new NAME [--elementwise] [--dir DIR]\n"
     "  write an out-of-tree plugin project to start from (a two-pass loss, or with\n"
     "  --elementwise an elementwise one)\n",
     {"--elementwise", "--dir"}},
    {"check",
     cmd_check,
     "losskit check PLUGIN.so [--loss ID] [--pairs] [--json]\n"
     "losskit check --all [--loss ID] [--pairs]\n"
     "  a conformance report on a plugin's losses, or on every plugin the registry lists\n"
     "  (LOSSKIT_PLUGIN_PATH, then the built-in folder); --pairs also compares the\n"
     "  gradient with every two parameters moved together; LOSSKIT_SIMD=0 or avx2 caps\n"
     "  the kernels\n",
     {"--loss", "--json", "--all", "--pairs"}},
    {"bench",
     cmd_bench,
     "losskit bench CONFIG [--shape N,C,H,W] [--dtype float32|float64] [--threads N]\n"
     "    [--repeat K] [--json]\n"
     "  time forward and forward+backward against the memory roofline on synthetic data\n",
     {"--shape", "--dtype", "--threads", "--repeat", "--json"}},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

void cli_unknown_option(const char *cmd, const char *opt)
{
    const command *c = find_command(cmd);
    size_t n = 0;
    while (c && n < sizeof c->options / sizeof c->options[0] && c->options[n])
        n++;
    const char *best = c ? lk_closest_name(opt, c->options, n) : NULL;
    if (best)
        cli_error("%s: unknown option '%s'; did you mean '%s'? (losskit %s --help)", cmd, opt, best,
                  cmd);
    else
        cli_error("%s: unknown option '%s'; see 'losskit %s --help'", cmd, opt, cmd);
}

/* "unknown command 'X'; did you mean 'Y'?", exit 2; where is "help: " for
 * `losskit help X`. */
static int unknown_command(const char *where, const char *cmd)
{
    const char *names[N_COMMANDS + 3] = {"help", "version"};
    for (size_t i = 0; i < N_COMMANDS; i++)
        names[i + 2] = commands[i].name;
    const char *best = lk_closest_name(cmd, names, N_COMMANDS + 2);
    if (best)
        cli_error("%sunknown command '%s'; did you mean '%s'? run 'losskit help'", where, cmd,
                  best);
    else
        cli_error("%sunknown command '%s'; run 'losskit help'", where, cmd);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    const command *c = find_command(cmd);
    if (c) {
        for (int i = 2; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                printf("usage: %s", c->usage);
                return EXIT_OK;
            }
        return c->fn(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        /* help COMMAND: that command's usage; help, help help, help
         * version: this text; anything else is not a command */
        const char *topic = argc > 2 ? argv[2] : NULL;
        c = topic ? find_command(topic) : NULL;
        if (topic && !c && strcmp(topic, "help") != 0 && strcmp(topic, "version") != 0)
            return unknown_command("help: ", topic);
        if (argc > 3) {
            cli_error("help: unexpected argument '%s'; usage: losskit help [COMMAND]", argv[3]);
            return EXIT_USAGE;
        }
        if (c)
            printf("usage: %s", c->usage);
        else
            fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2) {
            cli_error("version: unexpected argument '%s'; usage: losskit version", argv[2]);
            return EXIT_USAGE;
        }
        printf("losskit %s (plugin ABI %d.%d)\n", LK_VERSION_STRING, LK_ABI_MAJOR, LK_ABI_MINOR);
        return EXIT_OK;
    }
    return unknown_command("", cmd);
}
