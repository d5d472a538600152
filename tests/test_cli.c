/* test_cli.c: the losskit command as scripts see it.
 *
 * Every test runs LK_CLI_PATH as a subprocess (fork/exec) with stdout and
 * stderr captured separately, LOSSKIT_PLUGIN_PATH and LOSSKIT_THREADS unset
 * unless the test sets the path. Tensors are written with lk_npy_write into a
 * private temporary folder (mkdtemp, mode 0700) and expected values are
 * computed here, independently of the plugins. The contract checked:
 *
 *   output    list, list --json, info, info --json, run (text and --json),
 *             --grad, --out, --threads (identical bytes for 1 and 2 threads),
 *             bench --dtype (float64 moves twice float32's bytes), the shape
 *             bench timed (whole-batch defaults, example data)
 *   errors    exit 2 bad usage or config, 3 plugin load problem, 4 data
 *             problem; exactly one line on stderr and nothing on stdout
 *   plugins   a broken plugin on the path is one warning line and does not
 *             hide the others; an out-of-tree plugin (examples/shadow_dice)
 *             shadows the built-in dice. */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "losskit/losskit.h"

#define CLI_DIR     LK_SOURCE_ROOT "/tests/cli"
#define WRONG_MAJOR LK_FIXTURE_DIR "/fx_wrong_major.so"

static const char *const tutorial_ids[] = {
    "mse", "l1", "bce_with_logits", "dice_bce", "focal", "focal_mean_bce",
};
#define N_TUTORIAL 6

#define TMPDIR_TAG "cli"
#include "test_tmpdir.h"

TestSuite(cli, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 120);

/* ------------------------------------------------------------------------ */
/* Running a command                                                         */

typedef struct proc {
    int status; /* exit code; 128 + signal when killed */
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
} proc;

static void proc_free(proc *p)
{
    free(p->out);
    free(p->err);
    memset(p, 0, sizeof *p);
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    char *grown = realloc(*buf, *len + n + 1);
    cr_assert_not_null(grown);
    memcpy(grown + *len, data, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
}

/* Runs argv (argv[0] is searched on PATH when it has no '/'), with
 * LOSSKIT_PLUGIN_PATH set to plugin_path, or unset when it is NULL. */
static proc run_argv(const char *plugin_path, char *const *argv)
{
    int po[2], pe[2];
    cr_assert_eq(pipe(po), 0, "pipe: %s", strerror(errno));
    cr_assert_eq(pipe(pe), 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        unsetenv("LOSSKIT_PLUGIN_PATH");
        unsetenv("LOSSKIT_THREADS");
        if (plugin_path)
            setenv("LOSSKIT_PLUGIN_PATH", plugin_path, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    proc r;
    memset(&r, 0, sizeof r);
    append(&r.out, &r.out_len, "", 0);
    append(&r.err, &r.err_len, "", 0);
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        int n = poll(fds, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert_geq(n, 0, "poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[4096];
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0)
                append(&r.out, &r.out_len, buf, (size_t)got);
            else
                append(&r.err, &r.err_len, buf, (size_t)got);
        }
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return r;
}

/* Runs losskit with the NULL-terminated arguments. */
static proc lk(const char *plugin_path, ...)
{
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)LK_CLI_PATH;
    va_list ap;
    va_start(ap, plugin_path);
    for (char *a = va_arg(ap, char *); a; a = va_arg(ap, char *)) {
        cr_assert_lt(n, 63);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    return run_argv(plugin_path, argv);
}

static size_t count_char(const char *s, size_t len, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < len; i++)
        k += s[i] == c;
    return k;
}

/* A successful run: exit 0 and nothing on stderr. */
static void expect_ok(const proc *r)
{
    cr_assert_eq(r->status, 0, "exit %d, want 0; stderr: %s", r->status, r->err);
    cr_assert_eq(r->err_len, 0, "stderr is not empty: %s", r->err);
}

/* A failure: the exit code, nothing on stdout, exactly one line on stderr
 * ("losskit: ...\n") containing each NULL-terminated needle. */
static void expect_failure(const proc *r, int code, ...)
{
    cr_assert_eq(r->status, code, "exit %d, want %d; stderr: %s", r->status, code, r->err);
    cr_assert_eq(r->out_len, 0, "stdout is not empty on error: %s", r->out);
    cr_assert_eq(count_char(r->err, r->err_len, '\n'), 1,
                 "stderr is not exactly one line (%zu newlines): [%s]",
                 count_char(r->err, r->err_len, '\n'), r->err);
    cr_assert(r->err_len > 1 && r->err[r->err_len - 1] == '\n', "stderr: [%s]", r->err);
    cr_assert(strncmp(r->err, "losskit: ", 9) == 0, "stderr does not start 'losskit: ': %s",
              r->err);
    va_list ap;
    va_start(ap, code);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        cr_expect(strstr(r->err, needle) != NULL, "stderr lacks \"%s\": %s", needle, r->err);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static void write_npy(const char *path, int32_t dtype, const void *data, int32_t ndim,
                      const int64_t *shape)
{
    lk_tensor t = {(void *)(uintptr_t)data, dtype, ndim, shape, NULL};
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_write(path, &t, err), LK_OK, "lk_npy_write: %s", err);
}

static void read_npy(const char *path, lk_array *a)
{
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_read(path, a, err), LK_OK, "lk_npy_read: %s", err);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

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

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Logits in about [-3, 3] and targets in [0, 1] (binary and soft). */
static double logit_at(int i)
{
    return 3.0 * sin(0.91 * i + 0.3);
}

static double target_at(int i)
{
    double r = 0.5 + 0.5 * cos(0.37 * i);
    return i % 4 == 0 ? r : (r > 0.5 ? 1.0 : 0.0);
}

#define R  3
#define C  4
#define NX (R * C)
static const int64_t shape_rc[2] = {R, C};

/* x, t as float64 files x.npy, t.npy of shape (3, 4). */
static void write_xt_f64(double *x, double *t)
{
    for (int i = 0; i < NX; i++) {
        x[i] = logit_at(i);
        t[i] = target_at(i);
    }
    write_npy(tmp("x.npy"), LK_DTYPE_F64, x, 2, shape_rc);
    write_npy(tmp("t.npy"), LK_DTYPE_F64, t, 2, shape_rc);
}

static void write_xt_f32(float *x, float *t)
{
    for (int i = 0; i < NX; i++) {
        x[i] = (float)logit_at(i);
        t[i] = (float)target_at(i);
    }
    write_npy(tmp("x.npy"), LK_DTYPE_F32, x, 2, shape_rc);
    write_npy(tmp("t.npy"), LK_DTYPE_F32, t, 2, shape_rc);
}

static double mse_of(const double *x, const double *t, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += (x[i] - t[i]) * (x[i] - t[i]);
    return s / n;
}

/* The value a text-mode run prints, after what it computed: "mse (tutorial
 * 1.2.0), mean over 24 float64 elements: 4.25". */
static double parse_value(const proc *r)
{
    cr_assert_eq(count_char(r->out, r->out_len, '\n'), 1, "stdout is not one line: %s", r->out);
    const char *colon = strstr(r->out, " elements: ");
    cr_assert_not_null(colon, "stdout does not say what it computed: %s", r->out);
    cr_assert(strstr(r->out, " (") && strstr(r->out, "), "), "stdout does not name the plugin: %s",
              r->out);
    char *end;
    const char *num = colon + strlen(" elements: ");
    double v = strtod(num, &end);
    cr_assert(end != num && *end == '\n', "stdout does not end with a number: %s", r->out);
    return v;
}

static int close_to(double a, double b, double tol)
{
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

static cJSON *parse_json(const proc *r)
{
    cJSON *j = cJSON_Parse(r->out);
    cr_assert_not_null(j, "stdout is not JSON: %s", r->out);
    return j;
}

/* ------------------------------------------------------------------------ */
/* list                                                                      */

/* Parses the rows of `losskit list`: for each id, its family, counting rows
 * and "shadowed:" continuation lines. */
typedef struct list_row {
    char id[64];
    char plugin[64];
    int shadowed; /* followed by a "shadowed:" line */
    char shadow_line[1024];
} list_row;

static int parse_list(const char *text, list_row *rows, int cap)
{
    int n = 0;
    const char *line = text;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (buf[0] == ' ') {
            cr_assert_gt(n, 0, "a continuation line comes first: %s", buf);
            cr_assert(strstr(buf, "shadowed:") != NULL, "unexpected line: %s", buf);
            rows[n - 1].shadowed = 1;
            snprintf(rows[n - 1].shadow_line, sizeof rows[n - 1].shadow_line, "%s", buf);
        } else if (buf[0]) {
            cr_assert_lt(n, cap);
            memset(&rows[n], 0, sizeof rows[n]);
            cr_assert_eq(sscanf(buf, "%63s %63s", rows[n].id, rows[n].plugin), 2,
                         "unparsable list row: %s", buf);
            n++;
        }
        line += len + (nl ? 1 : 0);
    }
    return n;
}

/* The tutorial family has exactly its eight losses, each once. Other
 * families may be on the default path too; they are not counted. */
static void expect_tutorial_rows(const list_row *rows, int n)
{
    int tutorial = 0;
    for (int i = 0; i < n; i++)
        tutorial += strcmp(rows[i].plugin, "tutorial") == 0;
    cr_assert_eq(tutorial, N_TUTORIAL, "%d rows from tutorial, want %d", tutorial, N_TUTORIAL);
    for (int k = 0; k < N_TUTORIAL; k++) {
        int found = 0;
        for (int i = 0; i < n; i++)
            found +=
                strcmp(rows[i].id, tutorial_ids[k]) == 0 && strcmp(rows[i].plugin, "tutorial") == 0;
        cr_assert_eq(found, 1, "'%s' from tutorial listed %d times", tutorial_ids[k], found);
    }
}

Test(cli, list_prints_the_tutorial_losses)
{
    proc r = lk(NULL, "list", NULL);
    expect_ok(&r);
    list_row rows[64];
    int n = parse_list(r.out, rows, 64);
    expect_tutorial_rows(rows, n);
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].plugin, "tutorial") == 0)
            cr_assert(!rows[i].shadowed, "%s is marked shadowed", rows[i].id);
    proc_free(&r);
}

/* Where the fields after the first three words of a list row begin (the
 * summary's own spaces come after them). */
static void list_columns(const char *line, size_t len, size_t at[3])
{
    size_t i = 0;
    for (int f = 0; f < 3; f++) {
        while (i < len && line[i] != ' ')
            i++;
        while (i < len && line[i] == ' ')
            i++;
        at[f] = i;
    }
}

/* Every row's family, reductions and summary start in the same column,
 * however long the longest id (multilabel_soft_margin) or family is. */
Test(cli, list_columns_line_up)
{
    proc r = lk(NULL, "list", NULL);
    expect_ok(&r);
    size_t first[3] = {0, 0, 0};
    int rows = 0;
    for (const char *line = r.out; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len && line[0] != ' ') {
            size_t at[3];
            list_columns(line, len, at);
            if (rows++ == 0)
                memcpy(first, at, sizeof first);
            for (int f = 0; f < 3; f++)
                cr_assert_eq(at[f], first[f], "column %d of \"%.*s\" starts at %zu, not %zu", f + 2,
                             (int)len, line, at[f], first[f]);
        }
        line += len + (nl ? 1 : 0);
    }
    cr_assert_geq(rows, N_TUTORIAL, "%d rows: %s", rows, r.out);
    proc_free(&r);
}

static const cJSON *find_loss(const cJSON *losses, const char *id, const char *plugin)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, losses)
    {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "plugin");
        if (cJSON_IsString(i) && cJSON_IsString(p) && strcmp(i->valuestring, id) == 0 &&
            strcmp(p->valuestring, plugin) == 0)
            return it;
    }
    return NULL;
}

Test(cli, list_json)
{
    proc r = lk(NULL, "list", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(root, "losses");
    cr_assert(cJSON_IsArray(losses), "no 'losses' array: %s", r.out);
    int tutorial = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, losses)
    {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "plugin");
        cr_assert(cJSON_IsString(p), "an entry without plugin: %s", r.out);
        tutorial += strcmp(p->valuestring, "tutorial") == 0;
    }
    cr_assert_eq(tutorial, N_TUTORIAL, "%d entries from tutorial: %s", tutorial, r.out);
    for (int k = 0; k < N_TUTORIAL; k++) {
        const cJSON *o = find_loss(losses, tutorial_ids[k], "tutorial");
        cr_assert_not_null(o, "'%s' from tutorial is missing: %s", tutorial_ids[k], r.out);
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "shadowed")));
        const cJSON *summary = cJSON_GetObjectItemCaseSensitive(o, "summary");
        cr_assert(cJSON_IsString(summary) && summary->valuestring[0]);
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(o, "file");
        cr_assert(cJSON_IsString(file) && strstr(file->valuestring, "tutorial.so"));
    }
    const cJSON *diags = cJSON_GetObjectItemCaseSensitive(root, "diagnostics");
    cr_assert(cJSON_IsArray(diags) && cJSON_GetArraySize(diags) == 0, "diagnostics: %s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

Test(cli, list_refuses_an_unknown_argument)
{
    proc r = lk(NULL, "list", "--jsn", NULL);
    expect_failure(&r, 2, "--jsn", NULL);
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* info                                                                      */

Test(cli, info_focal)
{
    proc r = lk(NULL, "info", "focal", NULL);
    expect_ok(&r);
    cr_assert(strncmp(r.out, "focal ", 6) == 0, "first line: %s", r.out);
    int seen_alpha = 0, seen_gamma = 0, seen_mode = 0;
    const char *line = r.out;
    while (line && *line) {
        char name[64], type[64], def[64];
        if (sscanf(line, " %63s number list %63s", name, def) == 2) {
            if (strcmp(name, "alpha") == 0) {
                /* 0.25 in the binary modes, none in multiclass: no one
                 * default, and the next rows but one say so */
                seen_alpha++;
                cr_assert_str_eq(def, "unset", "alpha: %s", def);
                const char *meaning = strstr(line, "\n      unset: 0.25 in modes binary");
                const char *next = strchr(line, '\n');
                cr_assert(meaning && next && (next = strchr(next + 1, '\n')) && meaning == next,
                          "alpha's unset line: %s", r.out);
            }
        } else if (sscanf(line, " %63s %63s default %63s", name, type, def) == 3) {
            if (strcmp(name, "gamma") == 0) {
                seen_gamma++;
                cr_assert_str_eq(type, "number");
                cr_assert_str_eq(def, "2", "gamma default %s", def);
            } else if (strcmp(name, "mode") == 0) {
                seen_mode++;
                cr_assert_str_eq(type, "choice");
                cr_assert_str_eq(def, "\"binary\"", "mode default %s", def);
            }
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    cr_assert_eq(seen_alpha, 1, "no alpha row: %s", r.out);
    cr_assert_eq(seen_gamma, 1, "no gamma row: %s", r.out);
    cr_assert_eq(seen_mode, 1, "no mode row: %s", r.out);
    proc_free(&r);
}

/* Defaults and ranges in the fewest digits that read back: clip's 0.05,
 * not 0.050000000000000003. */
Test(cli, info_numbers_are_short)
{
    proc r = lk(NULL, "info", "asymmetric", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "default 0.05 ") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "default 1e-08 ") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "0000000") == NULL, "%s", r.out);
    proc_free(&r);
}

static const cJSON *find_param(const cJSON *params, const char *name)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, params)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return it;
    }
    return NULL;
}

static double num_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(v), "'%s' is not a number", key);
    return v->valuedouble;
}

Test(cli, info_focal_json)
{
    proc r = lk(NULL, "info", "focal", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    cr_assert(cJSON_IsString(id) && strcmp(id->valuestring, "focal") == 0);
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
    cr_assert(cJSON_IsArray(params), "no params: %s", r.out);
    cr_assert_eq(cJSON_GetArraySize(params), 6);

    /* one list serves binary focal's alpha (one value, 0.25 when left out)
     * and multiclass class weights (none when left out): no one default,
     * so "default" is null and "unset" says what leaving it out means */
    const cJSON *alpha = find_param(params, "alpha");
    cr_assert_not_null(alpha, "no alpha: %s", r.out);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(alpha, "type");
    cr_assert(cJSON_IsString(type) && strcmp(type->valuestring, "number list") == 0);
    const cJSON *adef = cJSON_GetObjectItemCaseSensitive(alpha, "default");
    cr_assert(cJSON_IsNull(adef), "alpha default: %s", r.out);
    const cJSON *aunset = cJSON_GetObjectItemCaseSensitive(alpha, "unset");
    cr_assert(cJSON_IsString(aunset) && strstr(aunset->valuestring, "0.25 in modes binary") &&
                  strstr(aunset->valuestring, "no class weights in mode multiclass"),
              "alpha unset: %s", r.out);
    cr_assert_eq(num_field(alpha, "min"), -1.0);
    cr_assert_eq(num_field(alpha, "min_items"), 1.0);

    const cJSON *gamma = find_param(params, "gamma");
    cr_assert_not_null(gamma, "no gamma: %s", r.out);
    type = cJSON_GetObjectItemCaseSensitive(gamma, "type");
    cr_assert(cJSON_IsString(type) && strcmp(type->valuestring, "number") == 0);
    cr_assert_eq(num_field(gamma, "default"), 2.0);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(gamma, "unset"), "gamma has a default");
    cr_assert_eq(num_field(gamma, "min"), 0.0);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(gamma, "max"), "gamma has no upper bound");

    const cJSON *reds = cJSON_GetObjectItemCaseSensitive(root, "reductions");
    cr_assert(cJSON_IsArray(reds) && cJSON_GetArraySize(reds) == 3);
    cJSON_Delete(root);
    proc_free(&r);
}

/* A parameter without a default value (ABI 1.2's lk_param_desc.unset):
 * text and JSON say what leaving it out means instead of a default the
 * loss does not apply; a list whose default is empty is [] in JSON. */
Test(cli, info_shows_what_an_unset_parameter_means)
{
    proc r = lk(NULL, "info", "bce_with_logits", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "ignore_index    integer     unset ") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "\n      unset: no element is ignored\n") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "-100") == NULL, "the default no config gets is shown: %s", r.out);
    cr_expect(strstr(r.out, "label_smoothing number      default 0 ") != NULL, "%s", r.out);
    proc_free(&r);

    r = lk(NULL, "info", "bce_with_logits", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
    const cJSON *ig = find_param(params, "ignore_index");
    cr_assert_not_null(ig, "no ignore_index: %s", r.out);
    cr_expect(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(ig, "default")), "%s", r.out);
    const cJSON *un = cJSON_GetObjectItemCaseSensitive(ig, "unset");
    cr_expect(cJSON_IsString(un) && strcmp(un->valuestring, "no element is ignored") == 0, "%s",
              r.out);
    const cJSON *pw = cJSON_GetObjectItemCaseSensitive(find_param(params, "pos_weight"), "default");
    cr_expect(cJSON_IsArray(pw) && cJSON_GetArraySize(pw) == 0, "pos_weight default: %s", r.out);
    cJSON_Delete(root);
    proc_free(&r);

    /* the long names of dice's parameters keep the columns aligned */
    r = lk(NULL, "info", "dice", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "    smooth_dr          number      unset              [0, inf]\n") !=
                  NULL,
              "%s", r.out);
    cr_expect(strstr(r.out, "    include_background boolean     default true       true|false\n") !=
                  NULL,
              "%s", r.out);
    cr_expect(strstr(r.out, "      unset: smooth's value\n") != NULL, "%s", r.out);
    proc_free(&r);
}

/* The numbers of dimensions a slot takes (ABI 1.3's lk_slot_desc.ndims):
 * the text's shape column and the JSON's "ndims" (null where any). */
Test(cli, info_shows_the_numbers_of_dimensions_a_slot_takes)
{
    proc r = lk(NULL, "info", "ctc", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "    input          required float32,float64 3 dims ") != NULL, "%s",
              r.out);
    cr_expect(strstr(r.out, "    input_lengths  required int64,int32     1 dim ") != NULL, "%s",
              r.out);
    proc_free(&r);
    r = lk(NULL, "info", "multilabel_margin", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, " 0, 1 or 2 dims ") != NULL, "%s", r.out);
    proc_free(&r);
    r = lk(NULL, "info", "total_variation", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, " 3 or more dims ") != NULL, "%s", r.out);
    proc_free(&r);

    r = lk(NULL, "info", "multi_margin", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(root, "slots");
    cr_assert(cJSON_IsArray(slots) && cJSON_GetArraySize(slots) == 2, "%s", r.out);
    const cJSON *nd = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(slots, 0), "ndims");
    cr_expect(cJSON_IsArray(nd) && cJSON_GetArraySize(nd) == 2 &&
                  cJSON_GetArrayItem(nd, 0)->valuedouble == 1.0 &&
                  cJSON_GetArrayItem(nd, 1)->valuedouble == 2.0,
              "input ndims: %s", r.out);
    nd = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(slots, 1), "ndims");
    cr_expect(cJSON_IsNull(nd), "target ndims: %s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

/* Where a whole-batch loss's samples lie (ABI 1.6's lk_slot_desc.batch):
 * the text's "gathered" lines and the JSON's "batch" (null where the slot
 * declares none). */
Test(cli, info_shows_where_a_whole_batch_loss_is_gathered)
{
    proc r = lk(NULL, "info", "ctc", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "  gathered across processes along:\n    input          dim 1, other "
                            "dims padded with zeros to the largest process's\n") != NULL,
              "%s", r.out);
    cr_expect(strstr(r.out, "    input_lengths  dim 0\n") != NULL, "%s", r.out);
    proc_free(&r);
    r = lk(NULL, "info", "ntxent", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "    input      dim 0, 2 views (each sample's rows N apart)\n") != NULL,
              "%s", r.out);
    proc_free(&r);
    r = lk(NULL, "info", "mse", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "gathered") == NULL, "%s", r.out);
    proc_free(&r);

    r = lk(NULL, "info", "ntxent", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(root, "slots");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(slots, 0), "batch");
    cr_assert(cJSON_IsObject(b), "%s", r.out);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(b, "dim")->valuedouble, 0.0);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(b, "views")->valuedouble, 2.0);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "padded")), "%s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
    r = lk(NULL, "info", "mse", "--json", NULL);
    expect_ok(&r);
    root = parse_json(&r);
    slots = cJSON_GetObjectItemCaseSensitive(root, "slots");
    b = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(slots, 0), "batch");
    cr_expect(cJSON_IsNull(b), "mse's batch: %s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

Test(cli, info_unknown_loss_suggests)
{
    proc r = lk(NULL, "info", "dcie", NULL);
    expect_failure(&r, 2, "'dcie'", "did you mean 'dice'", NULL);
    proc_free(&r);
}

Test(cli, info_without_a_loss_is_usage)
{
    proc r = lk(NULL, "info", NULL);
    expect_failure(&r, 2, "info", NULL);
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* run: values                                                               */

Test(cli, run_prints_the_value)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                NULL);
    expect_ok(&r);
    double v = parse_value(&r);
    double want = mse_of(x, t, NX);
    cr_assert(close_to(v, want, 1e-14), "losskit %.17g, computed %.17g", v, want);
    proc_free(&r);
}

/* The value in the fewest digits that read back as the same double:
 * (0.3 - 0)^2 is the double nearest 0.09, which %.17g would print as
 * 0.089999999999999997. */
Test(cli, run_prints_the_shortest_value)
{
    double x[1] = {0.3}, t[1] = {0.0};
    const int64_t one[1] = {1};
    write_npy(tmp("x1.npy"), LK_DTYPE_F64, x, 1, one);
    write_npy(tmp("t1.npy"), LK_DTYPE_F64, t, 1, one);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x1.npy"), "--target",
                tmp("t1.npy"), NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, " elements: 0.09\n") != NULL, "%s", r.out);
    proc_free(&r);
}

/* A NaN value prints as "nan" whatever its sign bit (printf's %g gives
 * "-nan" for a NaN with the sign set, which a NaN input's square keeps). */
Test(cli, run_prints_nan_without_a_sign)
{
    double x[2] = {-NAN, 1.0}, t[2] = {0.0, 0.0};
    const int64_t two[1] = {2};
    cr_assert(signbit(x[0]));
    write_npy(tmp("xn.npy"), LK_DTYPE_F64, x, 1, two);
    write_npy(tmp("tn.npy"), LK_DTYPE_F64, t, 1, two);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("xn.npy"), "--target",
                tmp("tn.npy"), NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, " elements: nan\n") != NULL, "%s", r.out);
    proc_free(&r);
}

Test(cli, run_json_output)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    cr_assert(cJSON_IsString(loss) && strcmp(loss->valuestring, "mse") == 0, "%s", r.out);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(root, "value");
    cr_assert(cJSON_IsNumber(value), "value: %s", r.out);
    double want = mse_of(x, t, NX);
    cr_assert(close_to(value->valuedouble, want, 1e-14), "value %.17g, computed %.17g",
              value->valuedouble, want);
    const cJSON *red = cJSON_GetObjectItemCaseSensitive(root, "reduction");
    cr_assert(cJSON_IsString(red) && strcmp(red->valuestring, "mean") == 0, "%s", r.out);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "shape");
    cr_assert(cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2, "%s", r.out);
    cr_assert_eq(cJSON_GetArrayItem(shape, 0)->valuedouble, R);
    cr_assert_eq(cJSON_GetArrayItem(shape, 1)->valuedouble, C);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    cr_assert(cJSON_IsString(dtype) && strcmp(dtype->valuestring, "float64") == 0, "%s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

Test(cli, run_json_reduction_none_has_null_value)
{
    float x[NX], t[NX];
    write_xt_f32(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/mse_none.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(root, "value");
    cr_assert(cJSON_IsNull(value), "value is not null: %s", r.out);
    const cJSON *red = cJSON_GetObjectItemCaseSensitive(root, "reduction");
    cr_assert(cJSON_IsString(red) && strcmp(red->valuestring, "none") == 0, "%s", r.out);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    cr_assert(cJSON_IsString(loss) && strcmp(loss->valuestring, "mse") == 0, "%s", r.out);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    cr_assert(cJSON_IsString(dtype) && strcmp(dtype->valuestring, "float32") == 0, "%s", r.out);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "shape");
    cr_assert(cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2, "%s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

Test(cli, grad_float64)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const char *g = tmp("g.npy");
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--grad", g, NULL);
    expect_ok(&r);
    lk_array a;
    read_npy(g, &a);
    cr_assert_eq(a.dtype, LK_DTYPE_F64);
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], R);
    cr_assert_eq(a.shape[1], C);
    const double *gv = a.data;
    for (int i = 0; i < NX; i++) {
        double want = 2.0 * (x[i] - t[i]) / NX;
        cr_assert(close_to(gv[i], want, 1e-15), "grad[%d] %.17g, want %.17g", i, gv[i], want);
    }
    lk_array_free(&a);
    proc_free(&r);
}

Test(cli, grad_float32)
{
    float x[NX], t[NX];
    write_xt_f32(x, t);
    const char *g = tmp("g.npy");
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--grad", g, NULL);
    expect_ok(&r);
    lk_array a;
    read_npy(g, &a);
    cr_assert_eq(a.dtype, LK_DTYPE_F32, "gradient dtype %s, want float32", lk_dtype_name(a.dtype));
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], R);
    cr_assert_eq(a.shape[1], C);
    const float *gv = a.data;
    for (int i = 0; i < NX; i++) {
        double want = 2.0 * ((double)x[i] - (double)t[i]) / NX;
        cr_assert(close_to(gv[i], want, 1e-6), "grad[%d] %.9g, want %.9g", i, (double)gv[i], want);
    }
    lk_array_free(&a);
    proc_free(&r);
}

Test(cli, out_with_reduction_none)
{
    float x[NX], t[NX];
    write_xt_f32(x, t);
    const char *o = tmp("l.npy");
    proc r = lk(NULL, "run", CLI_DIR "/mse_none.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), "--out", o, NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, o) != NULL, "stdout does not name the output: %s", r.out);
    lk_array a;
    read_npy(o, &a);
    cr_assert_eq(a.dtype, LK_DTYPE_F32, "out dtype %s, want the input's float32",
                 lk_dtype_name(a.dtype));
    cr_assert_eq(a.ndim, 2);
    cr_assert_eq(a.shape[0], R);
    cr_assert_eq(a.shape[1], C);
    const float *lv = a.data;
    for (int i = 0; i < NX; i++) {
        double d = (double)x[i] - (double)t[i];
        cr_assert(close_to(lv[i], d * d, 1e-6), "loss[%d] %.9g, want %.9g", i, (double)lv[i],
                  d * d);
    }
    lk_array_free(&a);
    proc_free(&r);
}

Test(cli, out_with_reduction_mean_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const char *o = tmp("l.npy");
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--out", o, NULL);
    expect_failure(&r, 2, "--out", "none", "mse.json", NULL);
    cr_assert(!file_exists(o), "--out file written despite the error");
    proc_free(&r);
}

/* Enough positions for several blocks, so that two threads really split the
 * work; the value and the gradient must not change by a single bit. */
Test(cli, threads_do_not_change_the_output)
{
    enum { BIG = 70001 };
    static double x[BIG], t[BIG];
    for (int i = 0; i < BIG; i++) {
        x[i] = logit_at(i);
        t[i] = target_at(i);
    }
    const int64_t shape[1] = {BIG};
    write_npy(tmp("x.npy"), LK_DTYPE_F64, x, 1, shape);
    write_npy(tmp("t.npy"), LK_DTYPE_F64, t, 1, shape);
    static const char *const configs[] = {CLI_DIR "/dice.json", CLI_DIR "/mse.json"};
    for (int c = 0; c < 2; c++) {
        proc r1 = lk(NULL, "run", configs[c], "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                     "--grad", tmp("g1.npy"), "--threads", "1", NULL);
        expect_ok(&r1);
        proc r2 = lk(NULL, "run", configs[c], "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                     "--grad", tmp("g2.npy"), "--threads", "2", NULL);
        expect_ok(&r2);
        cr_assert_gt(r1.out_len, 0);
        cr_assert_eq(r1.out_len, r2.out_len, "%s: [%s] vs [%s]", configs[c], r1.out, r2.out);
        cr_assert(memcmp(r1.out, r2.out, r1.out_len) == 0, "%s: 1 thread [%s], 2 threads [%s]",
                  configs[c], r1.out, r2.out);
        size_t l1, l2;
        unsigned char *g1 = slurp(tmp("g1.npy"), &l1);
        unsigned char *g2 = slurp(tmp("g2.npy"), &l2);
        cr_assert_eq(l1, l2);
        cr_assert(memcmp(g1, g2, l1) == 0, "%s: gradients differ between 1 and 2 threads",
                  configs[c]);
        free(g1);
        free(g2);
        proc_free(&r1);
        proc_free(&r2);
    }
}

Test(cli, bad_thread_count_is_usage)
{
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--threads", "0", NULL);
    expect_failure(&r, 2, "--threads", NULL);
    proc_free(&r);
}

/* LOSSKIT_THREADS is the same setting as --threads: a bad value is bad
 * usage (exit 2) too, named in one line, for every command that opens the
 * runtime. */
Test(cli, bad_thread_count_in_the_environment_is_usage)
{
    const char *cmds[3][3] = {{"list", NULL, NULL}, {"info", "mse", NULL}, {"run", NULL, NULL}};
    for (int c = 0; c < 3; c++) {
        char *argv[10] = {"env", "LOSSKIT_THREADS=abc", LK_CLI_PATH, (char *)cmds[c][0], NULL};
        if (c == 1)
            argv[4] = (char *)cmds[c][1];
        if (c == 2) {
            argv[4] = CLI_DIR "/mse.json";
            argv[5] = "--input";
            argv[6] = (char *)tmp("x.npy");
        }
        proc r = run_argv(NULL, argv);
        expect_failure(&r, 2, "LOSSKIT_THREADS: 'abc' is not a thread count", NULL);
        proc_free(&r);
    }
}

/* ------------------------------------------------------------------------ */
/* run: exit codes and messages                                              */

Test(cli, unknown_option_is_usage)
{
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--bogus", NULL);
    expect_failure(&r, 2, "'--bogus'", NULL);
    proc_free(&r);
}

Test(cli, unknown_command_is_usage)
{
    proc r = lk(NULL, "frobnicate", NULL);
    expect_failure(&r, 2, "'frobnicate'", NULL);
    proc_free(&r);
}

Test(cli, option_without_value_is_usage)
{
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", NULL);
    expect_failure(&r, 2, "--input", NULL);
    proc_free(&r);
}

Test(cli, missing_config_file_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const char *cfg = tmp("no_such_config.json");
    proc r = lk(NULL, "run", cfg, "--input", tmp("x.npy"), "--target", tmp("t.npy"), NULL);
    expect_failure(&r, 2, cfg, NULL);
    proc_free(&r);
}

Test(cli, bad_config_is_usage_and_names_file_and_path)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/bad_gamma.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), NULL);
    expect_failure(&r, 2, CLI_DIR "/bad_gamma.json", "$.params.gamma", "out of range", NULL);
    proc_free(&r);
}

/* The stray token is followed by a line break: still one line. */
Test(cli, invalid_json_config_is_one_line)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/invalid_json.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), NULL);
    expect_failure(&r, 2, CLI_DIR "/invalid_json.json:3:16:", "invalid JSON", NULL);
    proc_free(&r);
}

Test(cli, missing_input_file_is_data)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const char *missing = tmp("missing.npy");
    proc r =
        lk(NULL, "run", CLI_DIR "/mse.json", "--input", missing, "--target", tmp("t.npy"), NULL);
    expect_failure(&r, 4, missing, NULL);
    proc_free(&r);
}

/* A tensor the loss needs but the command line lacks is bad usage. */
Test(cli, missing_target_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), NULL);
    expect_failure(&r, 2, "missing tensor 'target'", NULL);
    proc_free(&r);
}

/* So is a tensor for a slot the loss does not have. */
Test(cli, tensor_for_an_unknown_slot_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    char bind[PATH_MAX + 8];
    snprintf(bind, sizeof bind, "var=%s", tmp("t.npy"));
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--tensor", bind, NULL);
    expect_failure(&r, 2, "'var' is not a tensor slot", NULL);
    proc_free(&r);
}

Test(cli, shape_mismatch_is_data_and_names_the_target)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const int64_t other[2] = {C, R};
    write_npy(tmp("t43.npy"), LK_DTYPE_F64, t, 2, other);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target",
                tmp("t43.npy"), NULL);
    expect_failure(&r, 4, tmp("t43.npy"), "shape", NULL);
    proc_free(&r);
}

Test(cli, refused_dtype_is_data)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    int64_t xi[NX];
    for (int i = 0; i < NX; i++)
        xi[i] = i % 3;
    write_npy(tmp("xi.npy"), LK_DTYPE_I64, xi, 2, shape_rc);
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("xi.npy"), "--target",
                tmp("t.npy"), NULL);
    expect_failure(&r, 4, tmp("xi.npy"), "int64", NULL);
    proc_free(&r);
}

Test(cli, corrupt_npy_is_data)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    write_text(tmp("corrupt.npy"), "this is not a numpy file\n");
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target",
                tmp("corrupt.npy"), NULL);
    expect_failure(&r, 4, tmp("corrupt.npy"), NULL);
    proc_free(&r);

    /* a valid header promising more data than the file holds */
    size_t len;
    unsigned char *bytes = slurp(tmp("x.npy"), &len);
    FILE *f = fopen(tmp("short.npy"), "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, len - 8, f), len - 8);
    fclose(f);
    free(bytes);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("short.npy"), "--target", tmp("t.npy"),
           NULL);
    expect_failure(&r, 4, tmp("short.npy"), "truncated", NULL);
    proc_free(&r);
}

Test(cli, target_outside_its_range_is_data)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    t[5] = 2.0;
    write_npy(tmp("t.npy"), LK_DTYPE_F64, t, 2, shape_rc);
    proc r = lk(NULL, "run", CLI_DIR "/dice.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), NULL);
    /* element 5 of the (R, C) target, the file after its index; a refusal
     * of the data in forward carries no "forward:" */
    expect_failure(&r, 4, "loss 'dice': target[1, 1] (", tmp("t.npy"), ") = 2 is outside [0, 1]",
                   NULL);
    proc_free(&r);
}

/* A loss's own refusal names the tensor's file after the slot's name, as
 * the host's checks do. */
Test(cli, a_loss_refusal_names_the_tensor_file)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const int64_t four[1] = {4};
    write_npy(tmp("t4.npy"), LK_DTYPE_F64, t, 1, four);
    write_text(tmp("focal.json"), "{\"loss\": \"focal\"}");
    proc r = lk(NULL, "run", tmp("focal.json"), "--input", tmp("x.npy"), "--target", tmp("t4.npy"),
                NULL);
    expect_failure(&r, 4, "loss 'focal': target (", tmp("t4.npy"), "): shape (4,), expected (3, 4)",
                   NULL);
    proc_free(&r);
}

/* A slot shaped like the first one is compared with it, and the message
 * names that first slot and its file: the first may be the wrong one
 * (triplet_margin's anchor, which no slot called input stands for). */
Test(cli, a_shape_rule_names_the_slot_it_follows)
{
    double v[15];
    for (int i = 0; i < 15; i++)
        v[i] = logit_at(i);
    const int64_t five[2] = {5, 3}, two[2] = {2, 3};
    write_npy(tmp("a5.npy"), LK_DTYPE_F64, v, 2, five);
    write_npy(tmp("p2.npy"), LK_DTYPE_F64, v, 2, two);
    write_text(tmp("triplet.json"), "{\"loss\": \"triplet_margin\"}");
    char a[PATH_MAX + 16], p[PATH_MAX + 16], n[PATH_MAX + 16];
    snprintf(a, sizeof a, "anchor=%s", tmp("a5.npy"));
    snprintf(p, sizeof p, "positive=%s", tmp("p2.npy"));
    snprintf(n, sizeof n, "negative=%s", tmp("p2.npy"));
    proc r =
        lk(NULL, "run", tmp("triplet.json"), "--tensor", a, "--tensor", p, "--tensor", n, NULL);
    expect_failure(&r, 4, "loss 'triplet_margin': positive (", tmp("p2.npy"),
                   "): shape (2, 3), expected (5, 3), the shape of anchor (", tmp("a5.npy"), ")",
                   NULL);
    proc_free(&r);
    double x[NX], t[NX];
    write_xt_f64(x, t);
    const int64_t other[2] = {C, R};
    write_npy(tmp("t43.npy"), LK_DTYPE_F64, t, 2, other);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t43.npy"),
           NULL);
    expect_failure(&r, 4, "target (", tmp("t43.npy"),
                   "): shape (4, 3), expected (3, 4), the shape of input (", tmp("x.npy"), ")",
                   NULL);
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* run: what the summary describes, outputs, out of memory, option misuse    */

/* A config that binds the input slot to another name: the summary and
 * --out follow the tensor the loss reads as its input (slot 0 of the first
 * term), whatever the order of the options. */
Test(cli, run_summary_describes_the_bound_input)
{
    double x[NX];
    int64_t cls[R];
    for (int i = 0; i < NX; i++)
        x[i] = logit_at(i);
    for (int i = 0; i < R; i++)
        cls[i] = i % C;
    const int64_t shape_r[1] = {R};
    write_npy(tmp("logits.npy"), LK_DTYPE_F64, x, 2, shape_rc);
    write_npy(tmp("cls.npy"), LK_DTYPE_I64, cls, 1, shape_r);
    write_text(tmp("ce.json"),
               "{\"loss\": \"cross_entropy\", \"tensors\": {\"input\": \"logits\"}}");
    write_text(tmp("ce_none.json"), "{\"loss\": \"cross_entropy\", \"tensors\": {\"input\": "
                                    "\"logits\"}, \"reduction\": \"none\"}");
    char bind[PATH_MAX + 16];
    snprintf(bind, sizeof bind, "logits=%s", tmp("logits.npy"));
    proc r = lk(NULL, "run", tmp("ce.json"), "--target", tmp("cls.npy"), "--tensor", bind, NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, "mean over 12 float64 elements: ") != NULL, "%s", r.out);
    proc_free(&r);
    r = lk(NULL, "run", tmp("ce.json"), "--target", tmp("cls.npy"), "--tensor", bind, "--json",
           NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(root, "shape");
    cr_assert(cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2, "%s", r.out);
    cr_assert_eq(cJSON_GetArrayItem(shape, 1)->valuedouble, C, "%s", r.out);
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(root, "dtype")->valuestring, "float64");
    cr_assert_eq(cJSON_GetObjectItemCaseSensitive(root, "elements")->valuedouble, NX);
    cJSON_Delete(root);
    proc_free(&r);
    /* reduction none: one loss per row, of the input's dtype */
    r = lk(NULL, "run", tmp("ce_none.json"), "--target", tmp("cls.npy"), "--tensor", bind, "--out",
           tmp("ce_out.npy"), NULL);
    expect_ok(&r);
    lk_array a;
    read_npy(tmp("ce_out.npy"), &a);
    cr_assert_eq(a.dtype, LK_DTYPE_F64, "out dtype %s", lk_dtype_name(a.dtype));
    cr_assert(a.ndim == 1 && a.shape[0] == R, "out of %d dimensions", (int)a.ndim);
    lk_array_free(&a);
    proc_free(&r);
}

/* Two outputs in one file, or an output over a file run reads, would lose
 * one of them: usage, before anything is read or written. */
Test(cli, run_refuses_outputs_that_share_a_file)
{
    float x[NX], t[NX];
    write_xt_f32(x, t);
    size_t len0, len1;
    unsigned char *before = slurp(tmp("x.npy"), &len0);
    char same[PATH_MAX + 16];
    snprintf(same, sizeof same, "%s/./o.npy", tmpdir);
    proc r = lk(NULL, "run", CLI_DIR "/mse_none.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), "--out", tmp("o.npy"), "--grad", same, NULL);
    expect_failure(&r, 2, "--out", "--grad", "o.npy", "same file", NULL);
    cr_assert(!file_exists(tmp("o.npy")), "an output was written despite the error");
    proc_free(&r);
    char g1[PATH_MAX + 16], g2[PATH_MAX + 16];
    snprintf(g1, sizeof g1, "input=%s", tmp("g.npy"));
    snprintf(g2, sizeof g2, "target=%s", tmp("g.npy"));
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
           "--grad-tensor", g1, "--grad-tensor", g2, NULL);
    expect_failure(&r, 2, "--grad-tensor input=", "--grad-tensor target=", "g.npy", NULL);
    proc_free(&r);
    /* the gradient over the input itself */
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
           "--grad", tmp("x.npy"), NULL);
    expect_failure(&r, 2, "--grad", "--input", "x.npy", NULL);
    proc_free(&r);
    unsigned char *after = slurp(tmp("x.npy"), &len1);
    cr_assert(len0 == len1 && memcmp(before, after, len0) == 0, "the input was overwritten");
    free(before);
    free(after);
}

#ifndef CLI_UNDER_ASAN
#if defined(__SANITIZE_ADDRESS__)
#define CLI_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLI_UNDER_ASAN 1
#endif
#endif
#ifndef CLI_UNDER_ASAN
#define CLI_UNDER_ASAN 0
#endif
#endif

/* ASan, when allocator_may_return_null lets an allocation fail, says so
 * on stderr ("==PID==WARNING: AddressSanitizer failed to allocate 0x...
 * bytes"): those lines are left out of r->err, so that the command's own
 * line can be checked as one line. */
static void drop_asan_warnings(proc *r)
{
    for (char *w; (w = strstr(r->err, "WARNING: AddressSanitizer failed to allocate")) != NULL;) {
        while (w > r->err && w[-1] != '\n')
            w--;
        char *end = strchr(w, '\n');
        end = end ? end + 1 : r->err + r->err_len;
        memmove(w, end, (size_t)(r->err + r->err_len - end) + 1);
        r->err_len -= (size_t)(end - w);
    }
}

/* Memory running out is exit 1 ("out of memory"), naming the file it was
 * for: the tensor being read or the gradient being made. 32 MiB tensors
 * under a 100 MiB address space: the gradient, or the target when the
 * program itself takes more, cannot be allocated. Under ASan (whose shadow
 * memory no address-space limit leaves room for) its allocation limit does
 * the same. */
Test(cli, run_out_of_memory_is_exit_1_naming_the_file)
{
    enum { BIG = 8 << 20 };
    float *x = calloc(BIG, sizeof *x);
    cr_assert_not_null(x);
    for (int i = 0; i < BIG; i++)
        x[i] = 0.25f * (float)(i % 7);
    const int64_t shape[1] = {BIG};
    write_npy(tmp("big_x.npy"), LK_DTYPE_F32, x, 1, shape);
    memset(x, 0, (size_t)BIG * sizeof *x);
    write_npy(tmp("big_t.npy"), LK_DTYPE_F32, x, 1, shape);
    free(x);
    char *cfg = CLI_DIR "/mse.json";
    char *argv[] = {
#if CLI_UNDER_ASAN
        "env",
        "ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=24:handle_segv=0",
#else
        "sh",
        "-c",
        "ulimit -v 102400 && exec \"$0\" \"$@\"",
#endif
        LK_CLI_PATH,
        "run",
        cfg,
        "--input",
        (char *)tmp("big_x.npy"),
        "--target",
        (char *)tmp("big_t.npy"),
        "--grad",
        (char *)tmp("big_g.npy"),
        "--threads",
        "1",
        NULL
    };
    proc r = run_argv(NULL, argv);
    drop_asan_warnings(&r);
    expect_failure(&r, 1, "out of memory", NULL);
    cr_assert(strstr(r.err, "big_g.npy") || strstr(r.err, "big_x.npy") ||
                  strstr(r.err, "big_t.npy"),
              "the message names no file: %s", r.err);
    cr_assert_null(strstr(r.err, "lk_array_alloc"), "an internal function is named: %s", r.err);
    proc_free(&r);
    unlink(tmp("big_x.npy"));
    unlink(tmp("big_t.npy"));
}

/* A gradient of a tensor the loss does not differentiate (mse's target) or
 * does not read: usage, naming the option and the file. */
Test(cli, gradient_the_loss_cannot_give_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    char g[PATH_MAX + 16];
    snprintf(g, sizeof g, "target=%s", tmp("gt.npy"));
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--grad-tensor", g, NULL);
    expect_failure(&r, 2, "--grad-tensor", tmp("gt.npy"), "no gradient", NULL);
    proc_free(&r);
    snprintf(g, sizeof g, "nosuch=%s", tmp("gt.npy"));
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
           "--grad-tensor", g, NULL);
    expect_failure(&r, 2, "--grad-tensor", tmp("gt.npy"), "no tensor 'nosuch'", NULL);
    proc_free(&r);
    cr_assert(!file_exists(tmp("gt.npy")));
}

/* An option at the end of the line, or followed by another option, says
 * what it needs. */
Test(cli, option_without_value_says_what_it_needs)
{
    static const char *const file_opts[] = {"--input", "--target", "--weight", "--grad", "--out"};
    for (size_t i = 0; i < sizeof file_opts / sizeof file_opts[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s needs a file", file_opts[i]);
        proc r = lk(NULL, "run", CLI_DIR "/mse.json", file_opts[i], NULL);
        expect_failure(&r, 2, want, NULL);
        proc_free(&r);
    }
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--threads", NULL);
    expect_failure(&r, 2, "--threads needs a value", NULL);
    proc_free(&r);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--tensor", NULL);
    expect_failure(&r, 2, "--tensor needs a value, NAME=FILE.npy", NULL);
    proc_free(&r);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--out", "--json", NULL);
    expect_failure(&r, 2, "--out needs a file", "'--json'", NULL);
    proc_free(&r);
}

/* An option that takes one value, given twice, is refused, not the last
 * one taken. */
Test(cli, option_given_twice_is_usage)
{
    float x[NX], t[NX];
    write_xt_f32(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/mse_none.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), "--out", tmp("o1.npy"), "--out", tmp("o2.npy"), NULL);
    expect_failure(&r, 2, "--out given twice", NULL);
    proc_free(&r);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
           "--threads", "1", "--threads", "2", NULL);
    expect_failure(&r, 2, "--threads given twice", NULL);
    proc_free(&r);
    r = lk(NULL, "run", CLI_DIR "/mse.json", "--input", tmp("x.npy"), "--target", tmp("t.npy"),
           "--grad", tmp("g1.npy"), "--grad", tmp("g2.npy"), NULL);
    expect_failure(&r, 2, "--grad given twice", NULL);
    proc_free(&r);
    cr_assert(!file_exists(tmp("o2.npy")) && !file_exists(tmp("g2.npy")));
}

Test(cli, help_of_an_unknown_command_is_usage)
{
    proc r = lk(NULL, "help", "frob", NULL);
    expect_failure(&r, 2, "help: unknown command 'frob'", NULL);
    proc_free(&r);
}

Test(cli, version_refuses_an_argument)
{
    proc r = lk(NULL, "version", "frob", NULL);
    expect_failure(&r, 2, "version: unexpected argument 'frob'", NULL);
    proc_free(&r);
    r = lk(NULL, "version", NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, "plugin ABI"), "%s", r.out);
    proc_free(&r);
}

/* Whether s[0 .. len) is well-formed UTF-8. */
static int is_utf8(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        size_t n = c < 0x80                 ? 1
                   : c >= 0xc2 && c <= 0xdf ? 2
                   : c >= 0xe0 && c <= 0xef ? 3
                   : c >= 0xf0 && c <= 0xf4 ? 4
                                            : 0;
        if (n == 0 || i + n > len)
            return 0;
        unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        if (n > 1 && (u[i + 1] < lo || u[i + 1] > hi))
            return 0;
        for (size_t k = 2; k < n; k++)
            if (u[i + k] < 0x80 || u[i + k] > 0xbf)
                return 0;
        i += n;
    }
    return 1;
}

/* JSON is UTF-8: a file name that is not (a config named m\xff.json, a
 * plugin folder) is written with U+FFFD for the stray byte. */
Test(cli, json_output_is_utf8_whatever_the_file_names)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    write_text(tmp("m\xff.json"), "{\"loss\": \"mse\"}");
    proc r = lk(NULL, "run", tmp("m\xff.json"), "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--json", NULL);
    expect_ok(&r);
    cr_assert(is_utf8(r.out, r.out_len), "not UTF-8: %s", r.out);
    cr_assert(strstr(r.out, "m\xef\xbf\xbd.json") != NULL, "%s", r.out);
    cJSON_Delete(parse_json(&r));
    proc_free(&r);
    r = lk(tmp("p\xff"), "list", "--json", NULL);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert(is_utf8(r.out, r.out_len), "list --json is not UTF-8");
    cr_assert(strstr(r.out, "p\xef\xbf\xbd") != NULL, "the diagnostic is missing: %s", r.out);
    proc_free(&r);
    /* check --json names the plugin file as given */
    size_t len;
    unsigned char *so = slurp(LK_FIXTURE_DIR "/fx_good.so", &len);
    FILE *f = fopen(tmp("q\xff.so"), "wb");
    cr_assert(so && f && fwrite(so, 1, len, f) == len && fclose(f) == 0, "copying fx_good.so");
    free(so);
    r = lk(NULL, "check", tmp("q\xff.so"), "--json", NULL);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert(is_utf8(r.out, r.out_len), "check --json is not UTF-8: %s", r.out);
    cr_assert(strstr(r.out, "q\xef\xbf\xbd.so") != NULL, "the plugin is not named: %s", r.out);
    cJSON_Delete(parse_json(&r));
    proc_free(&r);
    unlink(tmp("q\xff.so"));
}

/* ------------------------------------------------------------------------ */
/* Plugin load problems                                                      */

Test(cli, broken_plugin_is_one_warning_and_others_still_serve)
{
    cr_assert(file_exists(WRONG_MAJOR), "fixture %s was not built", WRONG_MAJOR);
    proc r = lk(WRONG_MAJOR, "list", NULL);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    list_row rows[64];
    int n = parse_list(r.out, rows, 64);
    expect_tutorial_rows(rows, n);
    for (int i = 0; i < n; i++)
        cr_assert(strcmp(rows[i].id, "fx_wrong_major") != 0, "the refused plugin is served");
    cr_assert_eq(count_char(r.err, r.err_len, '\n'), 1, "stderr is not one line: [%s]", r.err);
    cr_assert(strstr(r.err, "fx_wrong_major.so") != NULL, "the warning does not name the file: %s",
              r.err);
    cr_assert(strstr(r.err, "warning") != NULL, "stderr: %s", r.err);
    proc_free(&r);
}

Test(cli, loss_of_a_broken_plugin_is_plugin_error)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(WRONG_MAJOR, "run", CLI_DIR "/wrong_major.json", "--input", tmp("x.npy"),
                "--target", tmp("t.npy"), NULL);
    cr_assert_eq(r.status, 3, "exit %d, want 3; stderr: %s", r.status, r.err);
    cr_assert_eq(r.out_len, 0, "stdout: %s", r.out);
    cr_assert(strstr(r.err, "fx_wrong_major.so") != NULL, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "'fx_wrong_major'") != NULL, "stderr: %s", r.err);
    proc_free(&r);

    r = lk(WRONG_MAJOR, "info", "fx_wrong_major", NULL);
    cr_assert_eq(r.status, 3, "info: exit %d, want 3; stderr: %s", r.status, r.err);
    cr_assert_eq(r.out_len, 0, "stdout: %s", r.out);
    proc_free(&r);
}

/* Without a broken plugin the same config is simply a bad config. */
Test(cli, unknown_loss_without_a_broken_plugin_is_usage)
{
    double x[NX], t[NX];
    write_xt_f64(x, t);
    proc r = lk(NULL, "run", CLI_DIR "/wrong_major.json", "--input", tmp("x.npy"), "--target",
                tmp("t.npy"), NULL);
    expect_failure(&r, 2, "wrong_major.json", "$.loss", "unknown loss 'fx_wrong_major'", NULL);
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* Shadowing: examples/shadow_dice                                           */

#define SHADOW_SUMMARY "example: dice on probabilities, shadows the built-in"

/* Compiles the example as its README says, into the private folder. */
static const char *build_shadow(void)
{
    static char so[PATH_MAX + 64];
    snprintf(so, sizeof so, "%s/shadow.so", tmpdir);
    char *argv[] = {"cc",
                    "-std=c11",
                    "-shared",
                    "-fPIC",
                    "-fvisibility=hidden",
                    "-I",
                    LK_SOURCE_ROOT "/sdk/include",
                    "-o",
                    so,
                    LK_SOURCE_ROOT "/examples/shadow_dice/dice.c",
                    "-lm",
                    NULL};
    proc r = run_argv(NULL, argv);
    cr_assert_eq(r.status, 0, "cc exit %d: %s%s", r.status, r.out, r.err);
    proc_free(&r);
    cr_assert_eq(chmod(so, 0755), 0);
    struct stat st;
    cr_assert_eq(stat(tmpdir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "mkdtemp folder mode %o", (unsigned)(st.st_mode & 0777));
    return so;
}

Test(cli, shadow_list)
{
    const char *so = build_shadow();
    proc r = lk(tmpdir, "list", NULL);
    expect_ok(&r);
    list_row rows[64];
    int n = parse_list(r.out, rows, 64);
    expect_tutorial_rows(rows, n);
    int example = -1, builtin = -1, examples = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(rows[i].id, "dice") != 0)
            continue;
        if (strcmp(rows[i].plugin, "shadow_example") == 0)
            example = i, examples++;
        else if (strcmp(rows[i].plugin, "segmentation") == 0)
            builtin = i;
    }
    cr_assert_eq(examples, 1, "dice from shadow_example listed %d times: %s", examples, r.out);
    cr_assert_geq(builtin, 0, "no dice from segmentation: %s", r.out);
    cr_assert_lt(example, builtin, "the winner is not listed first: %s", r.out);
    cr_assert(!rows[example].shadowed, "the example's dice is marked shadowed: %s", r.out);
    cr_assert(rows[builtin].shadowed, "the segmentation family's dice is not marked shadowed: %s",
              r.out);
    cr_assert(strstr(rows[builtin].shadow_line, "segmentation.so") != NULL, "%s",
              rows[builtin].shadow_line);
    cr_assert(strstr(rows[builtin].shadow_line, so) != NULL, "%s", rows[builtin].shadow_line);
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].id, "dice") != 0)
            cr_assert(!rows[i].shadowed, "%s from %s is marked shadowed", rows[i].id,
                      rows[i].plugin);
    proc_free(&r);

    r = lk(tmpdir, "list", "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(root, "losses");
    const cJSON *ex = find_loss(losses, "dice", "shadow_example");
    const cJSON *bi = find_loss(losses, "dice", "segmentation");
    cr_assert_not_null(ex);
    cr_assert_not_null(bi);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(ex, "shadowed")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bi, "shadowed")));
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(bi, "shadowed_by");
    cr_assert(cJSON_IsString(by) && strcmp(by->valuestring, so) == 0, "shadowed_by: %s", r.out);
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(ex, "file");
    cr_assert(cJSON_IsString(file) && strcmp(file->valuestring, so) == 0, "file: %s", r.out);
    cJSON_Delete(root);
    proc_free(&r);
}

Test(cli, shadow_info)
{
    const char *so = build_shadow();
    proc r = lk(tmpdir, "info", "dice", NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, SHADOW_SUMMARY) != NULL, "not the example's summary: %s", r.out);
    cr_assert(strstr(r.out, "shadow_example") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, so) != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "segmentation") == NULL, "the built-in shows: %s", r.out);
    proc_free(&r);
}

/* The example's value and gradient on probabilities, computed here; the
 * built-in (which applies a sigmoid) would give a clearly different value. */
Test(cli, shadow_run)
{
    build_shadow();
    enum { M = 40 };
    double p[M], t[M];
    double I = 0, P = 0, T = 0, Is = 0, Ps = 0;
    for (int i = 0; i < M; i++) {
        p[i] = 0.5 + 0.45 * sin(0.77 * i);
        t[i] = target_at(i);
        I += p[i] * t[i];
        P += p[i];
        T += t[i];
        double s = 1.0 / (1.0 + exp(-p[i]));
        Is += s * t[i];
        Ps += s;
    }
    const int64_t shape[2] = {4, 10};
    write_npy(tmp("p.npy"), LK_DTYPE_F64, p, 2, shape);
    write_npy(tmp("t.npy"), LK_DTYPE_F64, t, 2, shape);
    const double smooth = 1.0; /* tests/cli/dice.json */
    double num = 2 * I + smooth, den = P + T + smooth;
    double want = 1.0 - num / den;
    double builtin = 1.0 - (2 * Is + smooth) / (Ps + T + smooth);
    cr_assert_gt(fabs(want - builtin), 1e-3, "the data cannot tell the two dice apart");

    proc r = lk(tmpdir, "run", CLI_DIR "/dice.json", "--input", tmp("p.npy"), "--target",
                tmp("t.npy"), "--grad", tmp("g.npy"), NULL);
    expect_ok(&r);
    double v = parse_value(&r);
    cr_assert(close_to(v, want, 1e-13), "losskit %.17g, the example's dice %.17g (built-in %.17g)",
              v, want, builtin);
    cr_expect_not_null(strstr(r.out, "dice (shadow_example "),
                       "the run does not say the shadowing plugin served it: %s", r.out);
    lk_array g;
    read_npy(tmp("g.npy"), &g);
    cr_assert_eq(g.dtype, LK_DTYPE_F64);
    cr_assert_eq(g.ndim, 2);
    const double *gv = g.data;
    for (int i = 0; i < M; i++) {
        double gw = (num - 2.0 * t[i] * den) / (den * den);
        cr_assert(close_to(gv[i], gw, 1e-13), "grad[%d] %.17g, want %.17g", i, gv[i], gw);
    }
    lk_array_free(&g);
    proc_free(&r);

    /* without the path, the same config runs the built-in */
    r = lk(NULL, "run", CLI_DIR "/dice.json", "--input", tmp("p.npy"), "--target", tmp("t.npy"),
           NULL);
    expect_ok(&r);
    v = parse_value(&r);
    cr_assert(close_to(v, builtin, 1e-13), "built-in %.17g, want %.17g", v, builtin);
    proc_free(&r);
}

/* Which kernels a loss chose, as LOSSKIT_DEBUG logs it: the best the CPU
 * has (AVX-512, else AVX2+FMA, else portable; float and double lanes of
 * each) unless LOSSKIT_SIMD caps it at "avx2" or asks for "0", the
 * portable ones. */
Test(cli, kernel_choice_follows_cpu_and_env)
{
    int avx2 = 0, avx512 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
    const char *best = avx512 ? "avx512 f32 and avx512 f64"
                       : avx2 ? "avx2 f32 and avx2 f64"
                              : "portable f32 and portable f64";
    const struct {
        const char *simd; /* NULL: unset */
        const char *want;
    } cases[] = {
        {NULL, best},
        {"avx2", avx2 ? "avx2 f32 and avx2 f64" : "portable f32 and portable f64"},
        {"0", "portable f32 and portable f64"},
        {"portable", "portable f32 and portable f64"},
    };
    setenv("LOSSKIT_DEBUG", "1", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].simd)
            setenv("LOSSKIT_SIMD", cases[i].simd, 1);
        else
            unsetenv("LOSSKIT_SIMD");
        proc p = lk(NULL, "run", LK_SOURCE_ROOT "/configs/focal.json", "--input",
                    LK_SOURCE_ROOT "/configs/data/input.npy", "--target",
                    LK_SOURCE_ROOT "/configs/data/target.npy", NULL);
        char want[128];
        snprintf(want, sizeof want, "focal: %s kernels", cases[i].want);
        cr_expect_eq(p.status, 0, "LOSSKIT_SIMD=%s: exit %d: %s",
                     cases[i].simd ? cases[i].simd : "(unset)", p.status, p.err);
        cr_expect_not_null(strstr(p.err, want), "LOSSKIT_SIMD=%s: no '%s' in: %s",
                           cases[i].simd ? cases[i].simd : "(unset)", want, p.err);
        proc_free(&p);
    }
    unsetenv("LOSSKIT_SIMD");
    unsetenv("LOSSKIT_DEBUG");
}

/* ------------------------------------------------------------------------ */
/* new                                                                       */

/* Runs `new NAME [flag] --dir <tmp>/NAME`; returns NAME.c's text and checks
 * that the config NAME.json names the loss. The project is removed again:
 * the suite's .fini removes files only. */
static char *new_project(const char *name, const char *flag)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s", tmp(name));
    proc r = flag ? lk(NULL, "new", name, flag, "--dir", dir, NULL)
                  : lk(NULL, "new", name, "--dir", dir, NULL);
    expect_ok(&r);
    cr_expect_not_null(strstr(r.out, "next:"), "no next: hint: %s", r.out);
    proc_free(&r);
    size_t len;
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    char *cfg = (char *)slurp(path, &len), want[128];
    cfg[len] = '\0';
    snprintf(want, sizeof want, "\"loss\": \"%s\"", name);
    cr_expect_not_null(strstr(cfg, want), "%s lacks %s: %s", path, want, cfg);
    free(cfg);
    snprintf(path, sizeof path, "%s/%s.c", dir, name);
    char *src = (char *)slurp(path, &len);
    src[len] = '\0';
    cr_expect_null(strstr(src, "@NAME@"), "%s keeps a template placeholder", path);
    const char *files[] = {"data/input.npy", "data/target.npy", "data", "meson.build", "README.md"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        cr_expect(file_exists(path), "new wrote no %s", path);
        remove(path);
    }
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    remove(path);
    snprintf(path, sizeof path, "%s/%s.c", dir, name);
    remove(path);
    rmdir(dir);
    return src;
}

Test(cli, new_elementwise_writes_the_elementwise_template)
{
    char *src = new_project("my_huber", "--elementwise");
    cr_expect_not_null(strstr(src, "LK_ELEMENTWISE_LOSS(my_huber,"), "not elementwise: %s", src);
    free(src);
}

Test(cli, new_without_a_flag_writes_the_two_pass_template)
{
    char *src = new_project("my_tversky", NULL);
    cr_expect_not_null(strstr(src, "LK_STATS_LOSS(my_tversky,"), "not two-pass: %s", src);
    free(src);
}

Test(cli, new_unknown_option_is_usage)
{
    proc r = lk(NULL, "new", "my_loss", "--elementwize", "--dir", tmp("never"), NULL);
    expect_failure(&r, 2, "new: unknown option '--elementwize'; did you mean '--elementwise'?",
                   NULL);
    cr_expect(!file_exists(tmp("never")), "a refused new created its folder");
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* bench                                                                     */

/* `bench --json` on configs/mse.json in the given dtype. */
static cJSON *bench_mse(const char *dtype)
{
    proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", "--dtype", dtype, "--json",
                "--shape", "64", "--repeat", "1", NULL);
    expect_ok(&r);
    cJSON *j = parse_json(&r);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    cr_assert(cJSON_IsString(d) && strcmp(d->valuestring, dtype) == 0, "dtype, want %s: %s", dtype,
              r.out);
    proc_free(&r);
    return j;
}

/* float64 data moves twice the bytes of float32 data: mse's input and
 * target, and its gradient, are all floating-point. */
Test(cli, bench_dtype_float64_moves_twice_the_bytes)
{
    cJSON *f32 = bench_mse("float32"), *f64 = bench_mse("float64");
    const char *keys[] = {"bytes_forward", "bytes_forward_backward",
                          "bytes_least_forward_backward"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        double b32 = num_field(f32, keys[k]), b64 = num_field(f64, keys[k]);
        cr_expect(b32 > 0 && b64 == 2 * b32, "%s: float32 %.0f, float64 %.0f", keys[k], b32, b64);
    }
    cr_expect_eq(num_field(f64, "elements"), 64);
    cJSON_Delete(f32);
    cJSON_Delete(f64);
}

/* With one round the fractions are that round's roofline time over the
 * loss time of the same pass (forward; forward+backward; the least bytes
 * against forward+backward), and every time is positive. */
Test(cli, bench_fractions_pair_each_pass_with_its_roofline)
{
    cJSON *j = bench_mse("float32");
    const char *frac[] = {"roofline_fraction_forward", "roofline_fraction_forward_backward",
                          "roofline_least_fraction_forward_backward"};
    const char *roof[] = {"roofline_forward_ms", "roofline_forward_backward_ms",
                          "roofline_least_forward_backward_ms"};
    const char *loss[] = {"forward_ms", "forward_backward_ms", "forward_backward_ms"};
    for (int k = 0; k < 3; k++) {
        double f = num_field(j, frac[k]), r = num_field(j, roof[k]), l = num_field(j, loss[k]);
        cr_expect(r > 0 && l > 0, "%s %g, %s %g", roof[k], r, loss[k], l);
        cr_expect(fabs(f - r / l) <= 1e-12 * (r / l), "%s %.17g, %s / %s = %.17g", frac[k], f,
                  roof[k], loss[k], r / l);
    }
    cJSON_Delete(j);
}

/* A whole-batch loss without --shape is timed on 8 images of 256 x 256,
 * with 21 classes when it takes class ids (lovasz_softmax) and one channel
 * otherwise (lovasz_hinge); --shape still wins. */
static void bench_shape(const char *config, const char *shape, const int64_t *want, int nd)
{
    proc r = shape ? lk(NULL, "bench", config, "--json", "--repeat", "1", "--shape", shape, NULL)
                   : lk(NULL, "bench", config, "--json", "--repeat", "1", NULL);
    expect_ok(&r);
    cJSON *j = parse_json(&r);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    cr_assert(cJSON_IsArray(sh) && cJSON_GetArraySize(sh) == nd, "%s: shape %s", config, r.out);
    double n = 1;
    for (int k = 0; k < nd; k++) {
        cr_expect_eq((int64_t)cJSON_GetArrayItem(sh, k)->valuedouble, want[k], "%s dim %d: %s",
                     config, k, r.out);
        n *= (double)want[k];
    }
    cr_expect_eq(num_field(j, "elements"), n, "%s: %s", config, r.out);
    cJSON_Delete(j);
    proc_free(&r);
}

Test(cli, bench_whole_batch_default_shape, .timeout = 240)
{
    const int64_t softmax[4] = {8, 21, 256, 256}, hinge[4] = {8, 1, 256, 256},
                  given[4] = {2, 3, 8, 8};
    bench_shape(LK_SOURCE_ROOT "/configs/lovasz_softmax.json", NULL, softmax, 4);
    bench_shape(LK_SOURCE_ROOT "/configs/lovasz_hinge.json", NULL, hinge, 4);
    bench_shape(LK_SOURCE_ROOT "/configs/lovasz_softmax.json", "2,3,8,8", given, 4);
}

/* A whole-batch loss whose plan refuses images (ntxent's (rows, dim)
 * matrix) is timed on 4096 embeddings of 128 dimensions, not refused; a
 * loss with example data (ctc) reports the shape of its example, which it
 * timed, not the default one, and the text report names it too. */
Test(cli, bench_reports_the_shape_it_timed, .timeout = 240)
{
    const int64_t rows[2] = {4096, 128};
    bench_shape(LK_SOURCE_ROOT "/configs/ntxent.json", NULL, rows, 2);
    proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/ctc.json", "--json", "--repeat", "1", NULL);
    expect_ok(&r);
    cJSON *j = parse_json(&r);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    cr_assert(cJSON_IsArray(sh) && cJSON_GetArraySize(sh) == 3, "ctc: %s", r.out);
    double n = 1;
    for (int k = 0; k < 3; k++)
        n *= cJSON_GetArrayItem(sh, k)->valuedouble;
    cr_expect_eq(num_field(j, "elements"), n, "ctc: %s", r.out);
    cJSON_Delete(j);
    proc_free(&r);
    r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", "--repeat", "1", "--shape", "3,5,7",
           NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "mse on 105 elements (3x5x7), float32") != NULL, "%s", r.out);
    proc_free(&r);
}

Test(cli, bench_unknown_dtype_is_usage)
{
    proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", "--dtype", "float16", NULL);
    expect_failure(&r, 2, "--dtype", "'float16'", NULL);
    proc_free(&r);
}

/* The host-overhead probe runs on the smallest shape near 64 elements the
 * loss's plan takes, and the report says how many elements that is: ssim's
 * window of 11 refuses the (2, 1, 4, 8) that halving gives and takes
 * (2, 1, 11, 11). Nothing on stderr, no NaN. */
Test(cli, bench_probe_runs_on_a_shape_the_loss_takes)
{
    const char *cfg = LK_SOURCE_ROOT "/configs/ssim.json";
    proc r = lk(NULL, "bench", cfg, "--shape", "2,1,32,32", "--repeat", "1", "--json", NULL);
    expect_ok(&r);
    cJSON *j = parse_json(&r);
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(j, "small_call_us");
    cr_expect(cJSON_IsNumber(us) && us->valuedouble > 0, "small_call_us: %s", r.out);
    cr_expect_eq(num_field(j, "small_call_elements"), 242, "%s", r.out);
    cJSON_Delete(j);
    proc_free(&r);
    r = lk(NULL, "bench", cfg, "--shape", "2,1,32,32", "--repeat", "1", NULL);
    expect_ok(&r);
    cr_expect(strstr(r.out, "host overhead per call on 242 elements: ") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "nan") == NULL, "%s", r.out);
    proc_free(&r);
}

/* --repeat is digits only, in [1, 10000]: no wrap-around (4294967297 is not
 * 1), no trailing junk (5x is not 5). */
Test(cli, bench_repeat_is_parsed_strictly)
{
    const char *bad[] = {"4294967297", "5x", "0", "10001", "", "-1", " 5"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", bad[k]);
        proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", "--shape", "64", "--repeat",
                    bad[k], NULL);
        expect_failure(&r, 2, "--repeat", quoted, NULL);
        proc_free(&r);
    }
}

/* Every term of a sum plans the synthesised data: MONAI's dice + focal
 * (its dice takes class indices, its focal only the one-hot float target
 * both read) is timed on float targets shaped like the input. */
Test(cli, bench_times_a_sum_whose_terms_take_different_targets)
{
    const int64_t want[4] = {2, 3, 8, 8};
    bench_shape(LK_SOURCE_ROOT "/configs/monai_dice_focal.json", "2,3,8,8", want, 4);
    bench_shape(LK_SOURCE_ROOT "/configs/monai_generalized_dice_focal.json", "2,3,8,8", want, 4);
}

/* When no synthesised data is accepted, the one line names the config and,
 * for each kind of target tried, the term that refused it. */
Test(cli, bench_names_the_terms_that_refuse_the_synthesised_targets)
{
    const char *cfg = tmp("bench_mix.json");
    write_text(cfg, "{\"terms\": [{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\"}}, "
                    "{\"loss\": \"multi_margin\"}]}");
    proc r = lk(NULL, "bench", cfg, "--shape", "2,3", "--repeat", "1", NULL);
    expect_failure(&r, 4, "bench_mix.json", "with target int64 (2,): loss 'focal'",
                   "with target one-hot float32 (2, 3): loss 'multi_margin'", NULL);
    proc_free(&r);
}

/* Without --shape, a loss whose plan refuses the default images is timed on
 * a (rows, 128) matrix of as many elements; a --shape it refuses is a usage
 * error naming the value. */
Test(cli, bench_falls_back_to_rows_without_shape, .timeout = 240)
{
    const int64_t rows[2] = {131072, 128};
    bench_shape(LK_SOURCE_ROOT "/configs/multi_margin.json", NULL, rows, 2);
    proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/multi_margin.json", "--shape", "2,3,4,4",
                "--repeat", "1", NULL);
    expect_failure(&r, 2, "multi_margin.json", "--shape '2,3,4,4'",
                   "has 4 dimensions, expected 1 or 2", NULL);
    proc_free(&r);
}

/* --shape: what is wrong with a bad one, and a missing option value. */
Test(cli, bench_shape_and_option_values_are_checked)
{
    static const struct {
        const char *shape, *needle;
    } bad[] = {
        {"0", "dimension 1 is 0"},
        {"4,0,2", "dimension 2 is 0"},
        {"1,2,", "'1,2,' is not a list"},
        {"1,,2", "'1,,2' is not a list"},
        {"-3", "'-3' is not a list"},
        {"1000000,1000000,1000000,1000000", "overflows"},
        {"99999999999999999999", "overflows"},
        {"1000000,1000000,1000000", "more than a tensor holds"},
        {"100000000000000", "more than this machine's memory"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", "--repeat", "1", "--shape",
                    bad[k].shape, NULL);
        expect_failure(&r, 2, "--shape", bad[k].needle, NULL);
        proc_free(&r);
    }
    static const char *const opts[] = {"--shape", "--dtype", "--threads", "--repeat"};
    for (size_t k = 0; k < 4; k++) {
        char needle[64];
        snprintf(needle, sizeof needle, "%s needs a value", opts[k]);
        proc r = lk(NULL, "bench", LK_SOURCE_ROOT "/configs/mse.json", opts[k], NULL);
        expect_failure(&r, 2, needle, NULL);
        proc_free(&r);
    }
}

/* Memory running out is exit 1, one line naming the config and the bytes
 * that could not be allocated: a 1 GiB input under a 400 MiB address space
 * (under ASan, whose shadow memory no such limit leaves room for, its
 * allocation limit does the same; CLI_UNDER_ASAN and drop_asan_warnings
 * are run's, above). */
Test(cli, bench_out_of_memory_is_exit_1)
{
    char *argv[] = {
#if CLI_UNDER_ASAN
        "env",
        "ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=512:handle_segv=0",
#else
        "sh",
        "-c",
        "ulimit -v 409600 && exec \"$0\" \"$@\"",
#endif
        LK_CLI_PATH,
        "bench",
        LK_SOURCE_ROOT "/configs/mse.json",
        "--shape",
        "256,1,1024,1024",
        "--threads",
        "1",
        "--repeat",
        "1",
        NULL
    };
    proc r = run_argv(NULL, argv);
    drop_asan_warnings(&r);
    expect_failure(&r, 1, "mse.json", "out of memory", "1073741824 bytes", "'input'", NULL);
    proc_free(&r);
}

/* ------------------------------------------------------------------------ */
/* Help and suggestions                                                      */

/* Every subcommand answers --help (and `help CMD`) with its own usage on
 * stdout and exit 0, before it looks at any other argument. */
Test(cli, every_subcommand_answers_help)
{
    static const char *const cmds[] = {"list", "info", "run", "new", "check", "bench"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: losskit %s", cmds[i]);
        proc r = lk(NULL, cmds[i], "--bogus", "--help", NULL);
        cr_expect_eq(r.status, 0, "%s --help: exit %d; stderr: %s", cmds[i], r.status, r.err);
        cr_expect_eq(strncmp(r.out, want, strlen(want)), 0, "%s --help printed: %s", cmds[i],
                     r.out);
        proc_free(&r);
        r = lk(NULL, "help", cmds[i], NULL);
        cr_expect_eq(r.status, 0, "help %s: exit %d", cmds[i], r.status);
        cr_expect_eq(strncmp(r.out, want, strlen(want)), 0, "help %s printed: %s", cmds[i], r.out);
        proc_free(&r);
    }
}

/* A misspelt option or command gets the closest one, exit 2, one line. */
Test(cli, misspelt_option_and_command_get_a_suggestion)
{
    proc r = lk(NULL, "run", CLI_DIR "/mse.json", "--inptu", "x.npy", NULL);
    cr_expect_eq(r.status, 2, "exit %d", r.status);
    cr_expect_not_null(strstr(r.err, "unknown option '--inptu'; did you mean '--input'?"),
                       "stderr: %s", r.err);
    cr_expect_eq(count_char(r.err, r.err_len, '\n'), 1, "stderr is not one line: %s", r.err);
    proc_free(&r);
    r = lk(NULL, "chek", NULL);
    cr_expect_eq(r.status, 2, "exit %d", r.status);
    cr_expect_not_null(strstr(r.err, "unknown command 'chek'; did you mean 'check'?"), "stderr: %s",
                       r.err);
    proc_free(&r);
    r = lk(NULL, "list", "--zzzzzzzz", NULL);
    cr_expect_eq(r.status, 2, "exit %d", r.status);
    cr_expect_null(strstr(r.err, "did you mean"), "nothing is close, yet: %s", r.err);
    proc_free(&r);
}

/* A config key that starts like a known one ("reduce") is suggested, and an
 * unknown loss says where plugins are searched. */
Test(cli, config_hints)
{
    write_text(tmp("reduce.json"), "{\"loss\": \"mse\", \"reduce\": \"sum\"}");
    proc r = lk(NULL, "run", tmp("reduce.json"), "--input", tmp("x.npy"), NULL);
    cr_expect_eq(r.status, 2, "exit %d", r.status);
    cr_expect_not_null(strstr(r.err, "unknown key 'reduce'; did you mean 'reduction'?"),
                       "stderr: %s", r.err);
    proc_free(&r);
    write_text(tmp("nope.json"), "{\"loss\": \"my_new_loss\"}");
    r = lk(NULL, "run", tmp("nope.json"), "--input", tmp("x.npy"), NULL);
    cr_expect_eq(r.status, 2, "exit %d", r.status);
    cr_expect_not_null(strstr(r.err, "unknown loss 'my_new_loss'"), "stderr: %s", r.err);
    cr_expect_not_null(strstr(r.err, "LOSSKIT_PLUGIN_PATH"), "stderr: %s", r.err);
    proc_free(&r);
}

/* A scaffold named like a built-in loss is written, with a warning that it
 * will shadow the built-in. */
Test(cli, new_warns_when_it_shadows_a_builtin)
{
    proc r = lk(NULL, "new", "dice", "--dir", tmp("mydice"), NULL);
    cr_expect_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_expect_not_null(strstr(r.err, "warning: 'dice' is already a loss of plugin segmentation"),
                       "stderr: %s", r.err);
    cr_expect(file_exists(tmp("mydice/dice.c")), "the scaffold was not written");
    proc_free(&r);
    r = lk(NULL, "new", "my_own_loss", "--dir", tmp("mine"), NULL);
    cr_expect_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_expect_null(strstr(r.err, "warning"), "a fresh name warned: %s", r.err);
    proc_free(&r);
    /* the temporary folder's cleanup removes files, not folders */
    char cmd[PATH_MAX * 2 + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", tmp("mydice"), tmp("mine"));
    cr_expect_eq(system(cmd), 0, "%s", cmd);
}

/* ------------------------------------------------------------------------ */
/* run with bound tensors: configs/deep_supervision.json                     */

#define DS_CONFIG LK_SOURCE_ROOT "/configs/deep_supervision.json"
#define DS_DATA   LK_SOURCE_ROOT "/configs/data/"

/* `losskit run CONFIG --input X --target T [--grad G] --json`: the value. */
static double run_value(const char *config, const char *x, const char *t, const char *grad)
{
    proc r =
        grad ? lk(NULL, "run", config, "--input", x, "--target", t, "--grad", grad, "--json", NULL)
             : lk(NULL, "run", config, "--input", x, "--target", t, "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "value");
    cr_assert(cJSON_IsNumber(v), "no value: %s", r.out);
    double value = v->valuedouble;
    cJSON_Delete(root);
    proc_free(&r);
    return value;
}

/* The weighted sum over three scales is the sum of the three dice values
 * computed one by one (configs/dice.json is the same dice, smooth 1), in
 * the engine's order: bitwise equal. Each head's gradient, asked for by
 * its tensor name, is its term's gradient times the term's weight. */
Test(cli, deep_supervision_is_the_sum_of_its_scales)
{
    const char *cfg = LK_SOURCE_ROOT "/configs/dice.json";
    double v1 = run_value(cfg, DS_DATA "input.npy", DS_DATA "target.npy", tmp("g1.npy"));
    double v2 = run_value(cfg, DS_DATA "logits_x2.npy", DS_DATA "mask_x2.npy", tmp("g2.npy"));
    double v4 = run_value(cfg, DS_DATA "logits_x4.npy", DS_DATA "mask_x4.npy", tmp("g4.npy"));
    cr_assert(v1 != v2 && v2 != v4, "the scales must differ: %g %g %g", v1, v2, v4);

    char gx[PATH_MAX + 16], gx2[PATH_MAX + 16], gx4[PATH_MAX + 16];
    snprintf(gx, sizeof gx, "input=%s", tmp("ds_g1.npy"));
    snprintf(gx2, sizeof gx2, "logits_x2=%s", tmp("ds_g2.npy"));
    snprintf(gx4, sizeof gx4, "logits_x4=%s", tmp("ds_g4.npy"));
    proc r = lk(NULL, "run", DS_CONFIG, "--input", DS_DATA "input.npy", "--target",
                DS_DATA "target.npy", "--tensor", "logits_x2=" DS_DATA "logits_x2.npy", "--tensor",
                "mask_x2=" DS_DATA "mask_x2.npy", "--tensor", "logits_x4=" DS_DATA "logits_x4.npy",
                "--tensor", "mask_x4=" DS_DATA "mask_x4.npy", "--grad-tensor", gx, "--grad-tensor",
                gx2, "--grad-tensor", gx4, "--json", NULL);
    expect_ok(&r);
    cJSON *root = parse_json(&r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "value");
    cr_assert(cJSON_IsNumber(v), "%s", r.out);
    double want = 0.0;
    want += 1.0 * v1;
    want += 0.5 * v2;
    want += 0.25 * v4;
    cr_assert_eq(v->valuedouble, want, "deep supervision %.17g, v1 + v2/2 + v4/4 = %.17g",
                 v->valuedouble, want);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "loss");
    cr_assert_str_eq(name->valuestring, "1*dice + 0.5*dice + 0.25*dice");
    /* each term says which tensors its slots read */
    const cJSON *t2 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "terms"), 2);
    const cJSON *bind = cJSON_GetObjectItemCaseSensitive(t2, "tensors");
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(bind, "input")->valuestring, "logits_x4");
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(bind, "target")->valuestring, "mask_x4");
    const cJSON *t0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "terms"), 0);
    bind = cJSON_GetObjectItemCaseSensitive(t0, "tensors");
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(bind, "input")->valuestring, "input");
    /* --json names each gradient by its tensor */
    const cJSON *grads = cJSON_GetObjectItemCaseSensitive(root, "grads");
    cr_assert_eq(cJSON_GetArraySize(grads), 3, "%s", r.out);
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(grads, "logits_x2")->valuestring,
                     tmp("ds_g2.npy"));
    cJSON_Delete(root);
    proc_free(&r);

    static const struct {
        const char *alone, *bound;
        double weight;
    } heads[] = {
        {"g1.npy", "ds_g1.npy", 1.0}, {"g2.npy", "ds_g2.npy", 0.5}, {"g4.npy", "ds_g4.npy", 0.25}};
    for (size_t h = 0; h < 3; h++) {
        lk_array a, b;
        read_npy(tmp(heads[h].alone), &a);
        read_npy(tmp(heads[h].bound), &b);
        cr_assert_eq(a.nbytes, b.nbytes, "%s: the gradient has the head's shape", heads[h].bound);
        const float *ga = a.data, *gb = b.data;
        double worst = 0.0;
        for (size_t i = 0; i < a.nbytes / sizeof(float); i++) {
            double w = heads[h].weight * ga[i];
            cr_assert(ga[i] != 0.0f || gb[i] == 0.0f);
            double e = fabs(gb[i] - w) / (fabs(w) + 1e-30);
            worst = e > worst ? e : worst;
        }
        cr_assert(worst <= 1e-6, "%s: rel err %g against %g x the head alone", heads[h].bound,
                  worst, heads[h].weight);
        lk_array_free(&a);
        lk_array_free(&b);
    }
}

/* Two terms reading one tensor: its gradient is the sum of both terms'. */
Test(cli, shared_tensor_gradients_accumulate)
{
    double x[NX], t[NX], aux[NX];
    write_xt_f64(x, t);
    for (int i = 0; i < NX; i++)
        aux[i] = 0.25 * (i % 5) - 0.5;
    write_npy(tmp("aux.npy"), LK_DTYPE_F64, aux, 2, shape_rc);
    write_text(tmp("shared.json"),
               "{\"terms\": [{\"loss\": \"mse\", \"weight\": 2}, {\"loss\": \"l1\", \"weight\": "
               "0.5, \"tensors\": {\"target\": \"aux\"}}], \"reduction\": \"sum\"}");
    char bind[PATH_MAX + 8], grad[PATH_MAX + 8];
    snprintf(bind, sizeof bind, "aux=%s", tmp("aux.npy"));
    snprintf(grad, sizeof grad, "input=%s", tmp("gs.npy"));
    proc r = lk(NULL, "run", tmp("shared.json"), "--input", tmp("x.npy"), "--target", tmp("t.npy"),
                "--tensor", bind, "--grad-tensor", grad, NULL);
    expect_ok(&r);
    double v = parse_value(&r);
    double want = 0.0, l1 = 0.0;
    for (int i = 0; i < NX; i++)
        l1 += fabs(x[i] - aux[i]);
    want = 2.0 * mse_of(x, t, NX) * NX + 0.5 * l1;
    cr_assert(close_to(v, want, 1e-14), "value %.17g, want %.17g", v, want);
    lk_array g;
    read_npy(tmp("gs.npy"), &g);
    const double *gv = g.data;
    for (int i = 0; i < NX; i++) {
        double d = x[i] - aux[i];
        double w = 2.0 * 2.0 * (x[i] - t[i]) + 0.5 * (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0);
        cr_assert(close_to(gv[i], w, 1e-15), "grad[%d] %.17g, want %.17g", i, gv[i], w);
    }
    lk_array_free(&g);
    proc_free(&r);
}

/* A tensor a binding asks for and the command line lacks: usage, naming
 * the term and the slot. */
Test(cli, missing_bound_tensor_names_term_and_slot)
{
    proc r = lk(NULL, "run", DS_CONFIG, "--input", DS_DATA "input.npy", "--target",
                DS_DATA "target.npy", "--tensor", "logits_x2=" DS_DATA "logits_x2.npy", "--tensor",
                "mask_x2=" DS_DATA "mask_x2.npy", "--tensor", "logits_x4=" DS_DATA "logits_x4.npy",
                NULL);
    expect_failure(&r, 2, "loss 'dice' ($.terms[2]): missing tensor 'mask_x4' for slot 'target'",
                   NULL);
    proc_free(&r);
    /* a head's tensor at the wrong scale is a data problem naming the file */
    r = lk(NULL, "run", DS_CONFIG, "--input", DS_DATA "input.npy", "--target", DS_DATA "target.npy",
           "--tensor", "logits_x2=" DS_DATA "logits_x2.npy", "--tensor",
           "mask_x2=" DS_DATA "mask_x4.npy", "--tensor", "logits_x4=" DS_DATA "logits_x4.npy",
           "--tensor", "mask_x4=" DS_DATA "mask_x4.npy", NULL);
    expect_failure(&r, 4, "loss 'dice' ($.terms[1]: input=logits_x2 from ",
                   "target=mask_x2 from " DS_DATA "mask_x4.npy): target: shape (2, 1, 4, 4), "
                   "expected (2, 1, 8, 8)",
                   NULL);
    proc_free(&r);
}

Test(cli, run_help_documents_tensor_bindings)
{
    proc r = lk(NULL, "run", "--help", NULL);
    expect_ok(&r);
    cr_assert(strstr(r.out, "--tensor NAME=FILE.npy"), "%s", r.out);
    cr_assert(strstr(r.out, "\"tensors\""), "the config's bindings are not mentioned: %s", r.out);
    cr_assert(strstr(r.out, "--grad-tensor NAME=FILE.npy"), "%s", r.out);
    proc_free(&r);
}
