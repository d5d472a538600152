/* test_hardening.c: the edges issue 14 found, each with its exact behaviour.
 *
 *   configs   mean one thing: duplicate keys (anywhere), NUL characters in
 *             strings and keys and bytes after the value are errors naming
 *             the JSON path or the offset; numbers are range-checked before
 *             any integer conversion (lk_loss_from_json, lk_loss_from_file
 *             and `losskit run`, exit 2).
 *   messages  control characters from a config, a file name, an argument
 *             or the plugin path are written escaped (\n, \x1b, ...): every
 *             error stays one line.
 *   plugins   sizes a plugin supplies are bounded: plan fields and blocks x
 *             statistics (LK_ERR_INTERNAL, `run` exit 1), at most
 *             LK_MAX_PARAMS parameters, finite in-range defaults, an
 *             over-long id quoted cut so that the reason survives
 *             (fixtures in tests/fixtures/plugins/hardening/).
 *   files     configs, tensors and plugins must be regular files: a FIFO is
 *             refused in one line, never waited on; a bare name on the
 *             plugin path is ./NAME; a .npy header cannot make the reader
 *             allocate more than the file holds.
 *   paths     a plugin is judged by its real path: every folder on it, up
 *             to /, must be safe from other users (a sticky one like /tmp
 *             is); C1 controls (0x80-0x9f outside UTF-8, U+0080-U+009F) are
 *             escaped like C0, well-formed UTF-8 is kept.
 *
 * The CLI runs as a subprocess with a deadline: a command that hangs is
 * killed and the test fails instead of hanging the suite. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "losskit/losskit.h"

#define TMPDIR_TAG "hardening"
#include "test_tmpdir.h"

#define SRC "cfg.json"

/* Built with AddressSanitizer (gcc says so with a macro, clang through
 * __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define LK_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LK_UNDER_ASAN 1
#endif
#endif
#ifndef LK_UNDER_ASAN
#define LK_UNDER_ASAN 0
#endif

/* ------------------------------------------------------------------------ */
/* The runtime: the build tree's plugins                                     */

static lk_runtime *rt;

static void open_default(void)
{
    make_tmpdir();
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.use_env_path = 0;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "lk_runtime_open: %s", err);
    lk_loss_info li;
    cr_assert_eq(lk_runtime_find(rt, "dice", &li, NULL), LK_OK, "no tutorial plugin");
}

static void close_default(void)
{
    lk_runtime_close(rt);
    rt = NULL;
    remove_tmpdir();
}

TestSuite(hard_config, .init = open_default, .fini = close_default, .timeout = 60);
TestSuite(hard_cli, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 120);

/* Builds len bytes of json expecting LK_ERR_CONFIG, a NULL loss and exactly
 * the message want. */
static void expect_message_n(const char *json, size_t len, const char *want)
{
    lk_loss *loss = (lk_loss *)(uintptr_t)1;
    char msg[LK_ERRMSG_CAP];
    memset(msg, 0, sizeof msg);
    lk_status st = lk_loss_from_json(rt, json, len, SRC, &loss, msg);
    cr_assert_eq(st, LK_ERR_CONFIG, "%s: status %s, want LK_ERR_CONFIG; message: %s", json,
                 lk_status_name(st), msg);
    cr_assert_null(loss, "%s: *out is not NULL on failure", json);
    cr_assert_str_eq(msg, want, "%s", json);
}

static void expect_message(const char *json, const char *want)
{
    expect_message_n(json, strlen(json), want);
}

static lk_loss *build(const char *json)
{
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    lk_status st = lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg);
    cr_assert_eq(st, LK_OK, "%s: %s: %s", json, lk_status_name(st), msg);
    cr_assert_not_null(loss);
    return loss;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
    write_file(path, text, strlen(text));
}

/* ------------------------------------------------------------------------ */
/* Running the CLI with a deadline                                           */

typedef struct proc {
    int status; /* exit code; 128 + signal when killed */
    char out[65536];
    size_t out_len;
    char err[65536];
    size_t err_len;
} proc;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs losskit with argv (NULL-terminated, without argv[0]) in the folder
 * cwd (or here when NULL), LOSSKIT_PLUGIN_PATH set to plugin_path (unset
 * when NULL). A command still running after 20 s is killed: the test fails
 * with "hung". */
static void run_cli(proc *r, const char *cwd, const char *plugin_path, const char *const *argv)
{
    const char *args[32];
    int n = 0;
    args[n++] = LK_CLI_PATH;
    for (; argv[n - 1]; n++) {
        cr_assert_lt(n, 31);
        args[n] = argv[n - 1];
    }
    args[n] = NULL;
    int po[2], pe[2];
    cr_assert_eq(pipe(po), 0);
    cr_assert_eq(pipe(pe), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
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
        if (cwd && chdir(cwd) != 0)
            _exit(126);
        execv(args[0], (char *const *)(uintptr_t)args);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    memset(r, 0, sizeof *r);
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    double deadline = now_s() + 20.0;
    int hung = 0;
    while (open_fds > 0) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0) {
            hung = 1;
            break;
        }
        int k = poll(fds, 2, left);
        if (k < 0 && errno == EINTR)
            continue;
        cr_assert_geq(k, 0);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char *buf = i == 0 ? r->out : r->err;
            size_t *len = i == 0 ? &r->out_len : &r->err_len;
            char tmpbuf[4096];
            ssize_t got = read(fds[i].fd, tmpbuf, sizeof tmpbuf);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = sizeof r->out - 1 - *len;
            size_t take = (size_t)got < room ? (size_t)got : room;
            memcpy(buf + *len, tmpbuf, take);
            *len += take;
        }
    }
    if (hung)
        kill(pid, SIGKILL);
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert_not(hung, "losskit %s hung (killed after 20 s); stderr so far: %s", argv[0], r->err);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* A failure: the exit code, nothing on stdout and exactly the line want on
 * stderr ("losskit: " + want + "\n"). */
static void expect_cli_failure(const proc *r, int code, const char *want)
{
    char line[8192];
    snprintf(line, sizeof line, "losskit: %s\n", want);
    cr_assert_eq(r->status, code, "exit %d, want %d; stderr: %s", r->status, code, r->err);
    cr_assert_eq(r->out_len, 0, "stdout is not empty on error: %s", r->out);
    cr_assert_str_eq(r->err, line);
}

/* Writes a 2x3 float64 input and target for the CLI. */
static void write_xt(void)
{
    static const double x[6] = {0.1, -0.4, 1.2, 0.7, -2.0, 0.3};
    static const double t[6] = {0, 1, 1, 0, 0, 1};
    static const int64_t shape[2] = {2, 3};
    lk_tensor tx = {(void *)(uintptr_t)x, LK_DTYPE_F64, 2, shape, NULL};
    lk_tensor tt = {(void *)(uintptr_t)t, LK_DTYPE_F64, 2, shape, NULL};
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_write(tmp("x.npy"), &tx, err), LK_OK, "%s", err);
    cr_assert_eq(lk_npy_write(tmp("t.npy"), &tt, err), LK_OK, "%s", err);
}

/* ------------------------------------------------------------------------ */
/* 1. Configs mean one thing                                                 */

Test(hard_config, duplicate_param_names_the_path)
{
    expect_message("{\"loss\": \"focal\", \"params\": {\"gamma\": 2, \"gamma\": -1}}",
                   SRC ": $.params.gamma: duplicate key 'gamma' (a key may appear once per "
                       "object)");
}

Test(hard_config, duplicate_loss_and_reduction)
{
    expect_message("{\"loss\": \"mse\", \"loss\": \"focal\"}",
                   SRC ": $.loss: duplicate key 'loss' (a key may appear once per object)");
    expect_message("{\"loss\": \"mse\", \"reduction\": \"sum\", \"reduction\": \"mean\"}",
                   SRC ": $.reduction: duplicate key 'reduction' (a key may appear once per "
                       "object)");
    /* duplicates are found before anything else is judged: even an unknown
     * key that appears twice is a duplicate first */
    expect_message("{\"loss\": \"mse\", \"x\": 1, \"x\": 1}",
                   SRC ": $.x: duplicate key 'x' (a key may appear once per object)");
}

Test(hard_config, duplicate_inside_terms)
{
    expect_message("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"l1\", \"weight\": 1, "
                   "\"weight\": 2}]}",
                   SRC ": $.terms[1].weight: duplicate key 'weight' (a key may appear once per "
                       "object)");
    expect_message("{\"terms\": [{\"loss\": \"dice\", \"params\": {\"smooth\": 1, \"smooth\": "
                   "2}}]}",
                   SRC ": $.terms[0].params.smooth: duplicate key 'smooth' (a key may appear "
                       "once per object)");
}

/* A large object takes the sorting path; the first repeated key in
 * document order is the one named. */
Test(hard_config, duplicate_in_a_large_object)
{
    char json[4096];
    size_t used = (size_t)snprintf(json, sizeof json, "{\"loss\": \"mse\", \"params\": {");
    for (int i = 0; i < 40; i++)
        used += (size_t)snprintf(json + used, sizeof json - used, "\"k%d\": %d, ", 39 - i, i);
    snprintf(json + used, sizeof json - used, "\"k20\": 1, \"k7\": 1}}");
    expect_message(json, SRC ": $.params.k20: duplicate key 'k20' (a key may appear once per "
                             "object)");
}

Test(hard_config, distinct_keys_still_build)
{
    lk_loss *loss = build("{\"loss\": \"focal\", \"params\": {\"gamma\": 2, \"alpha\": 0.5}, "
                          "\"reduction\": \"sum\"}");
    cr_assert_eq(lk_loss_reduction(loss), LK_REDUCTION_SUM);
    lk_loss_free(loss);
}

Test(hard_config, nul_escape_in_a_string_names_the_path)
{
    expect_message("{\"loss\": \"focal\\u0000xyz\"}",
                   SRC ": $.loss: the string contains a NUL character (\\u0000), which configs "
                       "do not allow");
    expect_message("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"dice\", \"params\": {\"mode\": "
                   "\"binary\\u0000x\"}}]}",
                   SRC ": $.terms[1].params.mode: the string contains a NUL character (\\u0000), "
                       "which configs do not allow");
    /* in a key: the path shows the key as cJSON cut it */
    expect_message("{\"loss\": \"focal\", \"params\": {\"gamma\\u0000x\": 1}}",
                   SRC ": $.params.gamma: the key contains a NUL character (\\u0000), which "
                       "configs do not allow");
    /* in the description too, although nothing reads it */
    expect_message("{\"loss\": \"mse\", \"description\": \"a\\u0000\"}",
                   SRC ": $.description: the string contains a NUL character (\\u0000), which "
                       "configs do not allow");
}

Test(hard_config, raw_nul_byte_in_a_string_names_the_path)
{
    static const char json[] = "{\"loss\": \"focal\0xyz\"}";
    expect_message_n(json, sizeof json - 1,
                     SRC ": $.loss: the string contains a NUL character (\\u0000), which configs "
                         "do not allow");
}

Test(hard_config, escaped_backslash_before_u0000_is_not_a_nul)
{
    /* "\\u0000" is a backslash and the text u0000: not a NUL, just an
     * unknown loss */
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"x\\\\u0000\"}";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg), LK_ERR_CONFIG);
    cr_assert(strstr(msg, "unknown loss 'x\\u0000'") != NULL, "%s", msg);
}

Test(hard_config, bytes_after_the_value_name_the_offset)
{
    expect_message("{\"loss\": \"mse\"} x",
                   SRC ":1:17: invalid JSON: bytes after the JSON value at offset 16 near 'x'");
    expect_message("{\"loss\": \"mse\"}\n\n  {}",
                   SRC ":3:3: invalid JSON: bytes after the JSON value at offset 19 near '{}'");
    /* a NUL byte is not the end of the text */
    static const char nul[] = "{\"loss\": \"mse\"}\0zz";
    expect_message_n(nul, sizeof nul - 1,
                     SRC ":1:16: invalid JSON: bytes after the JSON value at offset 15 near ''");
    /* white space after the value is fine */
    lk_loss_free(build("{\"loss\": \"mse\"} \n\t\r\n"));
}

Test(hard_config, number_param_beyond_int64_builds)
{
    /* smooth is a NUMBER in [0, inf): 1e19 is valid and must not be cast
     * to int64 (undefined behaviour; run under UBSan to see it) */
    lk_loss *loss = build("{\"loss\": \"dice\", \"params\": {\"smooth\": 1e19}}");
    static const double x[4] = {0.1, -0.3, 2.0, 0.5}, t[4] = {0, 1, 1, 0};
    static const int64_t shape[2] = {1, 4};
    lk_named_tensor nt[2] = {
        {"input", {(void *)(uintptr_t)x, LK_DTYPE_F64, 2, shape, NULL}, NULL},
        {"target", {(void *)(uintptr_t)t, LK_DTYPE_F64, 2, shape, NULL}, NULL},
    };
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = nt;
    args.n_tensors = 2;
    double v = NAN;
    cr_assert_eq(lk_loss_eval(loss, &args, &v), LK_OK, "%s", args.errmsg);
    cr_assert(isfinite(v), "%g", v);
    lk_loss_free(loss);
    lk_loss_free(build("{\"loss\": \"dice\", \"params\": {\"smooth\": 1.7976931348623157e308}}"));
}

Test(hard_config, integer_param_outside_int64_is_an_error)
{
    /* dice's ignore_index is an INTEGER with no declared bounds */
    expect_message(
        "{\"loss\": \"dice\", \"params\": {\"ignore_index\": 1e19}}", SRC
        ": $.params.ignore_index: 10000000000000000000 is outside the range of a 64-bit integer");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 9223372036854775808}}",
                   SRC ": $.params.ignore_index: 9223372036854775808 is outside the range of "
                       "a 64-bit integer");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": -1e300}}",
                   SRC ": $.params.ignore_index: -1e+300 is outside the range "
                       "of a 64-bit integer");
    /* in range but beyond 2^53, where JSON numbers lose integers */
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": -9223372036854775808}}",
                   SRC ": $.params.ignore_index: -9223372036854775808 is beyond 2^53, where "
                       "a JSON number no longer holds every integer");
    lk_loss_free(build("{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", "
                       "\"ignore_index\": 9007199254740992}}"));
}

/* An INTEGER is read from the number as written, not from the double cJSON
 * makes of it: 9007199254740993 is not 9007199254740992, 2.0000000000000001
 * is not 2, whatever the doubles say. */
Test(hard_config, integer_param_is_read_exactly_as_written)
{
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 9007199254740993}}",
                   SRC ": $.params.ignore_index: 9007199254740993 is beyond 2^53, where a JSON "
                       "number no longer holds every integer");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": -9007199254740993}}",
                   SRC ": $.params.ignore_index: -9007199254740993 is beyond 2^53, where a JSON "
                       "number no longer holds every integer");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 9007199254740993.0}}",
                   SRC ": $.params.ignore_index: 9007199254740993.0 is beyond 2^53, where a JSON "
                       "number no longer holds every integer");
    /* in int64, and named as written (the double is 2^63, outside it) */
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 9223372036854775807}}",
                   SRC ": $.params.ignore_index: 9223372036854775807 is beyond 2^53, where a JSON "
                       "number no longer holds every integer");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 10000000000000000001}}",
                   SRC ": $.params.ignore_index: 10000000000000000001 is outside the range of a "
                       "64-bit integer");
    /* not integers, although their doubles are */
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 2.0000000000000001}}",
                   SRC ": $.params.ignore_index: expected an integer, got 2.0000000000000001");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 9007199254740992.5}}",
                   SRC ": $.params.ignore_index: expected an integer, got 9007199254740992.5");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 1e-400}}",
                   SRC ": $.params.ignore_index: expected an integer, got 1e-400");
    /* a very long literal is quoted cut */
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": "
                   "123456789012345678901234567890123456789012345678901234567890}}",
                   SRC ": $.params.ignore_index: 1234567890123456789012345678901234567... is "
                       "outside the range of a 64-bit integer");
    /* integers written any way JSON allows, within 2^53, build */
    static const char *const ok[] = {"9007199254740992", "-9007199254740992", "3.0", "1e2",
                                     "0.7e1", "-0", "900719925474099.2e1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char json[160];
        snprintf(json, sizeof json,
                 "{\"loss\": \"dice\", \"params\": {\"mode\": \"multiclass\", \"ignore_index\": %s}}",
                 ok[i]);
        lk_loss_free(build(json));
    }
}

/* A literal beyond the range of a double is named as written, not as
 * "not a finite number". */
Test(hard_config, number_beyond_a_double_is_named_as_written)
{
    expect_message("{\"loss\": \"dice\", \"params\": {\"smooth\": 1e400}}",
                   SRC ": $.params.smooth: 1e400 is beyond the range of a double (about 1.8e308 "
                       "at most)");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": -1e400}}",
                   SRC ": $.params.ignore_index: -1e400 is beyond the range of a double (about "
                       "1.8e308 at most)");
    expect_message("{\"terms\": [{\"loss\": \"mse\", \"weight\": 1e400}]}",
                   SRC ": $.terms[0].weight: 1e400 is beyond the range of a double (about "
                       "1.8e308 at most)");
    expect_message("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"alpha\": [1, "
                   "1.5e309]}}",
                   SRC ": $.params.alpha[1]: 1.5e309 is beyond the range of a double (about "
                       "1.8e308 at most)");
    /* out of range but finite: the double's shortest form, as before */
    expect_message("{\"loss\": \"focal\", \"params\": {\"gamma\": -1.0e0}}",
                   SRC ": $.params.gamma: -1 is out of range [0, inf]");
    /* ... unless that is another number than the one written */
    expect_message("{\"loss\": \"focal\", \"params\": {\"gamma\": -1.00000000000000001}}",
                   SRC ": $.params.gamma: -1.00000000000000001 is out of range [0, inf]");
}

/* A long source name (a deep folder) is shown with its middle left out:
 * the JSON path and the problem always fit in LK_ERRMSG_CAP bytes. */
Test(hard_config, long_source_names_keep_the_problem)
{
    char source[700];
    size_t n = 0;
    for (int i = 1; n < 600; i++)
        n += (size_t)snprintf(source + n, sizeof source - n,
                              "/experiment_run_2024_12_06_lr0.001_batch64_%d", i);
    snprintf(source + n, sizeof source - n, "/config.json");
    const char *json = "{\"loss\": \"focal\", \"params\": {\"gamma\": -1}}";
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP];
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), source, &loss, msg), LK_ERR_CONFIG);
    const char *end = "/config.json: $.params.gamma: -1 is out of range [0, inf]";
    size_t len = strlen(msg);
    cr_assert(len > strlen(end) && strcmp(msg + len - strlen(end), end) == 0, "cut: %s", msg);
    cr_assert(strncmp(msg, "/experiment_run_2024_12_06_lr0.001_batch64_1/", 45) == 0, "%s", msg);
    cr_assert(strstr(msg, "/.../") != NULL, "%s", msg);
    cr_assert(len < 300, "%s", msg);
    /* one long name without a '/', with control characters: escaped, cut
     * between escapes, still one line with the problem */
    memset(source, 'a', 600);
    source[300] = '\x1b';
    source[599] = '\n';
    source[600] = '\0';
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), source, &loss, msg), LK_ERR_CONFIG);
    end = "aaa\\n: $.params.gamma: -1 is out of range [0, inf]";
    len = strlen(msg);
    cr_assert(len > strlen(end) && strcmp(msg + len - strlen(end), end) == 0, "cut: %s", msg);
    cr_assert(strstr(msg, "...") != NULL && strchr(msg, '\x1b') == NULL, "%s", msg);
    /* a file: lk_loss_from_file's own messages too */
    char dir[PATH_MAX], path[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s", tmpdir);
    int depth = 0;
    while (strlen(dir) < 460) {
        size_t k = strlen(dir);
        snprintf(dir + k, sizeof dir - k, "/experiment_run_2024_12_06_lr0.001_batch64_%d", ++depth);
        cr_assert_eq(mkdir(dir, 0700), 0, "mkdir %s: %s", dir, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, json);
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, msg), LK_ERR_CONFIG);
    len = strlen(msg);
    end = "_batch64_10/config.json: $.params.gamma: -1 is out of range [0, inf]";
    cr_assert(len > strlen(end) && strcmp(msg + len - strlen(end), end) == 0, "cut: %s", msg);
    cr_assert(strncmp(msg, tmpdir, 10) == 0, "%s", msg);
    unlink(path);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, msg), LK_ERR_IO);
    char want[160];
    snprintf(want, sizeof want, "_batch64_10/missing.json: cannot open config: %s",
             strerror(ENOENT));
    len = strlen(msg);
    cr_assert(strcmp(msg + len - strlen(want), want) == 0, "cut: %s", msg);
    for (; depth > 0; depth--) {
        rmdir(dir);
        *strrchr(dir, '/') = '\0';
    }
}

/* Numbers in messages as a user writes them: the fewest digits that read
 * back as the same double (1.1, not 1.1000000000000001), the range too. */
Test(hard_config, numbers_in_messages_are_short)
{
    expect_message("{\"loss\": \"asymmetric\", \"params\": {\"clip\": 1.1}}",
                   SRC ": $.params.clip: 1.1 is out of range [0, 1]");
    expect_message("{\"loss\": \"robust\", \"params\": {\"alpha\": 2.1}}",
                   SRC ": $.params.alpha: 2.1 is out of range [-1000, 2]");
    expect_message("{\"loss\": \"dice\", \"params\": {\"ignore_index\": 0.3}}",
                   SRC ": $.params.ignore_index: expected an integer, got 0.3");
}

Test(hard_config, loss_from_file_refuses_duplicates_too)
{
    const char *path = tmp("dup.json");
    write_text(path, "{\"loss\": \"focal\", \"params\": {\"gamma\": 2, \"gamma\": -1}}\n");
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, msg), LK_ERR_CONFIG);
    char want[LK_ERRMSG_CAP + 64];
    snprintf(want, sizeof want,
             "%s: $.params.gamma: duplicate key 'gamma' (a key may appear once per object)", path);
    cr_assert_str_eq(msg, want);
    /* and a file with bytes after the value */
    write_text(path, "{\"loss\": \"mse\"}}");
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, msg), LK_ERR_CONFIG);
    snprintf(want, sizeof want,
             "%s:1:16: invalid JSON: bytes after the JSON value at offset 15 near '}'", path);
    cr_assert_str_eq(msg, want);
}

Test(hard_cli, run_refuses_a_duplicate_key_with_exit_2)
{
    write_xt();
    const char *cfg = tmp("dup.json");
    write_text(cfg, "{\"loss\": \"focal\", \"params\": {\"gamma\": 2, \"gamma\": -1}}");
    proc r;
    const char *argv[] = {"run", cfg, "--input", tmp("x.npy"), "--target", tmp("t.npy"), NULL};
    run_cli(&r, NULL, NULL, argv);
    char want[1024];
    snprintf(want, sizeof want,
             "run: %s: $.params.gamma: duplicate key 'gamma' (a key may appear once per object)",
             cfg);
    expect_cli_failure(&r, 2, want);

    write_text(cfg, "{\"loss\": \"focal\\u0000xyz\"}");
    run_cli(&r, NULL, NULL, argv);
    snprintf(want, sizeof want,
             "run: %s: $.loss: the string contains a NUL character (\\u0000), which configs do "
             "not allow",
             cfg);
    expect_cli_failure(&r, 2, want);
}

/* ------------------------------------------------------------------------ */
/* 2. Messages escape control characters                                     */

/* No byte below 0x20 (but the final newline of a CLI line) and no 0x7f. */
static void expect_no_controls(const char *s, size_t len, int allow_final_newline)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (allow_final_newline && i == len - 1 && c == '\n')
            continue;
        cr_assert(c >= 0x20 && c != 0x7f, "control byte 0x%02x at %zu in [%s]", c, i, s);
    }
}

Test(hard_config, loss_name_with_esc_and_newline_is_escaped)
{
    const char *json = "{\"loss\": \"x\\u001b[31mred\\nline\\t\\u007f\"}";
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg), LK_ERR_CONFIG);
    expect_no_controls(msg, strlen(msg), 0);
    cr_assert(strncmp(msg, SRC ": $.loss: unknown loss 'x\\x1b[31mred\\nline\\t\\x7f'; ",
                      strlen(SRC ": $.loss: unknown loss 'x\\x1b[31mred\\nline\\t\\x7f'; ")) == 0,
              "%s", msg);
}

Test(hard_config, source_name_with_controls_is_escaped)
{
    const char *json = "{\"loss\": \"mse\", \"extra\": 1}";
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), "a\nb\x1b\r.json", &loss, msg),
                 LK_ERR_CONFIG);
    cr_assert_str_eq(msg, "a\\nb\\x1b\\r.json: $: unknown key 'extra' (allowed: loss, params, "
                          "reduction, terms, description, tensors)");
}

/* An escape is never cut in half when the message is too long. */
Test(hard_config, long_escaped_message_is_cut_between_escapes)
{
    char json[2048];
    size_t used = (size_t)snprintf(json, sizeof json, "{\"loss\": \"");
    for (int i = 0; i < 300; i++)
        used += (size_t)snprintf(json + used, sizeof json - used, "\\u001b");
    snprintf(json + used, sizeof json - used, "\"}");
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg), LK_ERR_CONFIG);
    size_t n = strlen(msg);
    cr_assert_lt(n, (size_t)LK_ERRMSG_CAP);
    expect_no_controls(msg, n, 0);
    /* it ends with a whole escape \x1b, not with part of one */
    const char *last = strrchr(msg, '\\');
    cr_assert_not_null(last);
    cr_assert_str_eq(last, "\\x1b", "%s", msg);
}

Test(hard_cli, config_with_esc_and_newline_is_one_escaped_line)
{
    write_xt();
    const char *cfg = tmp("esc.json");
    write_text(cfg, "{\"loss\": \"x\\u001b]0;pwned\\u0007\\nline\"}");
    proc r;
    const char *argv[] = {"run", cfg, "--input", tmp("x.npy"), "--target", tmp("t.npy"), NULL};
    run_cli(&r, NULL, NULL, argv);
    cr_assert_eq(r.status, 2, "exit %d; stderr: %s", r.status, r.err);
    cr_assert_eq(r.out_len, 0);
    expect_no_controls(r.err, r.err_len, 1);
    char want[1024];
    snprintf(want, sizeof want,
             "losskit: run: %s: $.loss: unknown loss 'x\\x1b]0;pwned\\x07\\nline'; ", cfg);
    cr_assert(strncmp(r.err, want, strlen(want)) == 0, "%s", r.err);
}

Test(hard_cli, file_name_and_argument_with_controls_are_escaped)
{
    proc r;
    const char *bad_cmd[] = {"li\nst\x1b[2J", NULL};
    run_cli(&r, NULL, NULL, bad_cmd);
    expect_cli_failure(&r, 2, "unknown command 'li\\nst\\x1b[2J'; run 'losskit help'");

    const char *cfg = tmp("no\nsuch\x1b.json");
    const char *missing[] = {"run", cfg, "--input", "x.npy", NULL};
    run_cli(&r, NULL, NULL, missing);
    char want[1024];
    snprintf(want, sizeof want, "run: %s/no\\nsuch\\x1b.json: cannot open config: %s", tmpdir,
             strerror(ENOENT));
    expect_cli_failure(&r, 2, want);

    const char *threads[] = {"run", "c.json", "--input", "x.npy", "--threads", "\x7f\t", NULL};
    run_cli(&r, NULL, NULL, threads);
    expect_cli_failure(&r, 2, "--threads: '\\x7f\\t' is not a thread count in [1, 1024]");
}

Test(hard_cli, plugin_path_with_controls_gives_an_escaped_warning)
{
    proc r;
    const char *argv[] = {"list", NULL};
    run_cli(&r, NULL, "/nonexistent\n\x1b[1m", argv);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    char want[512];
    snprintf(want, sizeof want,
             "losskit: warning: plugin not loaded: /nonexistent\\n\\x1b[1m: plugin path element: "
             "%s\n",
             strerror(ENOENT));
    cr_assert_str_eq(r.err, want);
}

/* ------------------------------------------------------------------------ */
/* 3. The host bounds every plugin-supplied size                             */

#define HARD_FX LK_FIXTURE_DIR "/hardening/"

static lk_runtime *open_only(const char *plugin_path)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = plugin_path;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    lk_runtime *r = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &r, err), LK_OK, "lk_runtime_open: %s", err);
    return r;
}

/* Loading the one file gives exactly the diagnostic "FILE: want" and no
 * loss. */
static void expect_refused(const char *file, const char *want)
{
    lk_runtime *r = open_only(file);
    cr_assert_eq(lk_runtime_diag_count(r), 1, "%zu diagnostics", lk_runtime_diag_count(r));
    char line[16384];
    snprintf(line, sizeof line, "%s: %s", file, want);
    cr_expect_str_eq(lk_runtime_diag(r, 0), line);
    cr_expect_eq(lk_runtime_loss_count(r), 0);
    lk_runtime_close(r);
}

Test(hard_config, nan_and_infinite_defaults_are_refused_at_load)
{
    expect_refused(HARD_FX "fx_limits_nan_default.so",
                   "loss 'fx_limits': parameter 'p0': its default is not a finite number (NaN or "
                   "infinite); plugin refused");
    expect_refused(HARD_FX "fx_limits_inf_default.so",
                   "loss 'fx_limits': parameter 'p0': its default is not a finite number (NaN or "
                   "infinite); plugin refused");
    expect_refused(HARD_FX "fx_limits_nan_list.so",
                   "loss 'fx_limits': parameter 'p0': its default list has an item that is not a "
                   "finite number; plugin refused");
    expect_refused(HARD_FX "fx_limits_big_int.so",
                   "loss 'fx_limits': parameter 'p0': it is an integer whose default is outside "
                   "the 64-bit range; plugin refused");
}

Test(hard_config, long_id_warning_keeps_its_reason)
{
    char want[512];
    snprintf(want, sizeof want,
             "loss '%.64s... (10000 characters)': its id has 10000 characters; at most 64 are "
             "allowed; plugin refused",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    expect_refused(HARD_FX "fx_limits_long_id.so", want);
}

Test(hard_config, more_than_256_parameters_are_refused_at_load)
{
    expect_refused(HARD_FX "fx_limits_params_257.so",
                   "loss 'fx_limits': it declares more than 256 parameters (LK_MAX_PARAMS); "
                   "plugin refused");
    /* 100,000 parameters cost no more than 257: the count stops at the
     * limit (it used to add 11 s to every command) */
    double t0 = now_s();
    expect_refused(HARD_FX "fx_limits_params_100k.so",
                   "loss 'fx_limits': it declares more than 256 parameters (LK_MAX_PARAMS); "
                   "plugin refused");
    cr_expect_lt(now_s() - t0, 2.0, "loading took %.2f s", now_s() - t0);
}

static double eval_sum(lk_runtime *r, const char *json, lk_status want, char *msg)
{
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(r, json, strlen(json), "t", &loss, err), LK_OK, "%s: %s", json,
                 err);
    static const double x[2] = {1.0, 2.0};
    static const int64_t shape[1] = {2};
    lk_named_tensor nt = {"input", {(void *)(uintptr_t)x, LK_DTYPE_F64, 1, shape, NULL}, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = &nt;
    args.n_tensors = 1;
    double v = NAN;
    lk_status st = lk_loss_eval(loss, &args, &v);
    cr_assert_eq(st, want, "%s: %s: %s", json, lk_status_name(st), args.errmsg);
    if (msg)
        snprintf(msg, LK_ERRMSG_CAP, "%s", args.errmsg);
    lk_loss_free(loss);
    return v;
}

Test(hard_config, exactly_256_parameters_load_and_the_last_is_usable)
{
    lk_runtime *r = open_only(HARD_FX "fx_limits_params_256.so");
    cr_assert_eq(lk_runtime_diag_count(r), 0, "%s", lk_runtime_diag(r, 0));
    lk_loss_info li;
    cr_assert_eq(lk_runtime_find(r, "fx_limits", &li, NULL), LK_OK);
    /* p255 scales the sum 1 + 2 */
    cr_expect_eq(
        eval_sum(r, "{\"loss\": \"fx_limits\", \"params\": {\"p0\": 5, \"p255\": 3}}", LK_OK, NULL),
        9.0);
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"fx_limits\", \"params\": {\"p256\": 1}}";
    cr_assert_eq(lk_loss_from_json(r, json, strlen(json), "t", &loss, err), LK_ERR_CONFIG);
    cr_expect(strncmp(err, "t: $.params: unknown parameter 'p256' for loss 'fx_limits'",
                      strlen("t: $.params: unknown parameter 'p256' for loss 'fx_limits'")) == 0,
              "%s", err);
    lk_runtime_close(r);
}

Test(hard_config, plan_sizes_are_bounded_before_use)
{
    lk_runtime *r = open_only(HARD_FX "fx_bad_plan.so");
    cr_assert_eq(lk_runtime_diag_count(r), 0, "%s", lk_runtime_diag(r, 0));
    char msg[LK_ERRMSG_CAP];
    eval_sum(r, "{\"loss\": \"fx_plan_overflow\"}", LK_ERR_INTERNAL, msg);
    cr_expect_str_eq(msg, "loss 'fx_plan_overflow': plan() returned an invalid plan: "
                          "9223372036854775807 blocks x 1048576 statistics overflow the "
                          "statistics buffer's size (a plugin bug)");
    eval_sum(r, "{\"loss\": \"fx_plan_negative\"}", LK_ERR_INTERNAL, msg);
    cr_expect_str_eq(msg, "loss 'fx_plan_negative': plan() returned an invalid plan: "
                          "out_shape[0] is negative (-1) (a plugin bug)");
    eval_sum(r, "{\"loss\": \"fx_plan_zero_block\"}", LK_ERR_INTERNAL, msg);
    cr_expect_str_eq(msg, "loss 'fx_plan_zero_block': plan() returned an invalid plan: "
                          "block_positions is 0; it must be positive (a plugin bug)");
    eval_sum(r, "{\"loss\": \"fx_plan_no_stats\"}", LK_ERR_INTERNAL, msg);
    cr_expect_str_eq(msg, "loss 'fx_plan_no_stats': plan() returned an invalid plan: "
                          "n_stats is 0; it must be 1 to 1048576 (a plugin bug)");
    /* lk_loss_out_shape plans too, and refuses the same way */
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"fx_plan_negative\", \"reduction\": \"none\"}";
    cr_assert_eq(lk_loss_from_json(r, json, strlen(json), "t", &loss, err), LK_OK, "%s", err);
    static const double x[2] = {1.0, 2.0};
    static const int64_t shape[1] = {2};
    lk_named_tensor nt = {"input", {(void *)(uintptr_t)x, LK_DTYPE_F64, 1, shape, NULL}, NULL};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = &nt;
    args.n_tensors = 1;
    int32_t nd;
    int64_t out_shape[LK_MAX_NDIM];
    cr_expect_eq(lk_loss_out_shape(loss, &args, &nd, out_shape), LK_ERR_INTERNAL);
    cr_expect_str_eq(args.errmsg, "loss 'fx_plan_negative': plan() returned an invalid plan: "
                                  "out_shape[0] is negative (-1) (a plugin bug)");
    lk_loss_free(loss);
    lk_runtime_close(r);
}

Test(hard_cli, bad_plan_and_refused_plugin_through_the_cli)
{
    const char *cfg = tmp("plan.json");
    write_text(cfg, "{\"loss\": \"fx_plan_overflow\"}");
    static const double x[2] = {1.0, 2.0};
    static const int64_t shape[1] = {2};
    lk_tensor tx = {(void *)(uintptr_t)x, LK_DTYPE_F64, 1, shape, NULL};
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_write(tmp("x1.npy"), &tx, err), LK_OK, "%s", err);
    proc r;
    const char *argv[] = {"run", cfg, "--input", tmp("x1.npy"), NULL};
    run_cli(&r, NULL, HARD_FX "fx_bad_plan.so", argv);
    char plan_want[1024];
    snprintf(plan_want, sizeof plan_want,
             "run: %s: loss 'fx_plan_overflow': plan() returned an invalid plan: "
             "9223372036854775807 blocks x 1048576 statistics overflow the statistics buffer's "
             "size (a plugin bug)",
             cfg);
    expect_cli_failure(&r, 1, plan_want);

    /* a refused plugin is one warning line; its loss is then unknown:
     * exit 3 (a plugin problem) */
    write_text(cfg, "{\"loss\": \"fx_limits\"}");
    run_cli(&r, NULL, HARD_FX "fx_limits_params_257.so", argv);
    cr_assert_eq(r.status, 3, "exit %d; stderr: %s", r.status, r.err);
    const char *want = "losskit: warning: plugin not loaded: " HARD_FX
                       "fx_limits_params_257.so: loss 'fx_limits': it declares more than 256 "
                       "parameters (LK_MAX_PARAMS); plugin refused\n";
    cr_assert(strncmp(r.err, want, strlen(want)) == 0, "%s", r.err);
}

/* ------------------------------------------------------------------------ */
/* 4. Files: configs, tensors and plugins must be regular files              */

static const char *make_fifo(const char *name)
{
    const char *path = tmp(name);
    cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo %s: %s", path, strerror(errno));
    return path;
}

Test(hard_config, fifo_config_is_refused_without_blocking)
{
    const char *fifo = make_fifo("cfg.fifo");
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_file(rt, fifo, &loss, msg), LK_ERR_IO);
    cr_assert_null(loss);
    char want[LK_ERRMSG_CAP + 64];
    snprintf(want, sizeof want, "%s: cannot open config: not a regular file (it is a FIFO)", fifo);
    cr_assert_str_eq(msg, want);
    /* a directory says what reading one would */
    cr_assert_eq(lk_loss_from_file(rt, tmpdir, &loss, msg), LK_ERR_IO);
    snprintf(want, sizeof want, "%s: cannot open config: %s", tmpdir, strerror(EISDIR));
    cr_assert_str_eq(msg, want);
}

Test(hard_config, fifo_npy_is_refused_without_blocking)
{
    const char *fifo = make_fifo("x.npy");
    lk_array a;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_read(fifo, &a, msg), LK_ERR_IO);
    char want[LK_ERRMSG_CAP + 64];
    snprintf(want, sizeof want, "%s: cannot open: not a regular file (it is a FIFO)", fifo);
    cr_assert_str_eq(msg, want);
    /* a character device is not a tensor either */
    cr_assert_eq(lk_npy_read("/dev/zero", &a, msg), LK_ERR_IO);
    cr_assert_str_eq(msg, "/dev/zero: cannot open: not a regular file (it is a character device)");
}

/* A header that claims 1 GiB in a file of 128 bytes is refused by comparing
 * the sizes, before any allocation: under an address-space limit that
 * makes a 1 GiB allocation fail, the error is still the truncation. */
Test(hard_config, npy_never_allocates_more_than_the_file_holds)
{
    char header[128];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<f8', 'fortran_order': False, 'shape': (134217728,), }");
    while ((10 + n + 1) % 64)
        header[n++] = ' ';
    header[n++] = '\n';
    unsigned char file[256];
    memcpy(file, "\x93NUMPY\x01\x00", 8);
    file[8] = (unsigned char)(n & 0xff);
    file[9] = (unsigned char)(n >> 8);
    memcpy(file + 10, header, (size_t)n);
    const char *path = tmp("huge.npy");
    write_file(path, file, 10 + (size_t)n);

#if LK_UNDER_ASAN
    /* ASan's shadow memory is far beyond any address-space limit, which
     * would fail its own next mapping: tests/meson.build sets
     * max_allocation_size_mb=768 and allocator_may_return_null=1 instead,
     * the same bound as a NULL from malloc. */
    static void *volatile probe; /* volatile: the compiler may not assume success */
    probe = malloc((size_t)1 << 30);
    cr_assert_null(probe, "ASan serves 1 GiB: ASAN_OPTIONS lacks max_allocation_size_mb=768");
#else
    struct rlimit lim;
    cr_assert_eq(getrlimit(RLIMIT_AS, &lim), 0);
    lim.rlim_cur = (rlim_t)768 << 20;
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        cr_log_warn("setrlimit: %s (the size check is still tested)", strerror(errno));
#endif
    lk_array a;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_npy_read(path, &a, msg), LK_ERR_FORMAT, "%s", msg);
    char want[LK_ERRMSG_CAP + 64];
    snprintf(want, sizeof want, "%s: truncated file: expected 1073741824 data bytes, found 0",
             path);
    cr_assert_str_eq(msg, want);
}

/* A bare file name on the plugin path is the file in the current folder,
 * loaded as ./NAME (dlopen would search the library path for NAME). */
Test(hard_config, bare_plugin_name_is_the_file_in_the_current_folder)
{
    size_t len;
    FILE *f = fopen(LK_FIXTURE_DIR "/fx_good.so", "rb");
    cr_assert_not_null(f);
    static unsigned char so[1 << 22];
    len = fread(so, 1, sizeof so, f);
    fclose(f);
    cr_assert_gt(len, 0);
    write_file(tmp("fx_good.so"), so, len);
    cr_assert_eq(chmod(tmp("fx_good.so"), 0755), 0);
    cr_assert_eq(chdir(tmpdir), 0);
    lk_runtime *r = open_only("fx_good.so");
    cr_assert_eq(lk_runtime_diag_count(r), 0, "%s", lk_runtime_diag(r, 0));
    lk_loss_info li;
    cr_assert_eq(lk_runtime_find(r, "fx_sq", &li, NULL), LK_OK);
    cr_expect_str_eq(li.plugin_file, "./fx_good.so");
    lk_runtime_close(r);
    /* a bare name that is not in the current folder is not looked for
     * anywhere else */
    r = open_only("libc.so.6");
    cr_assert_eq(lk_runtime_diag_count(r), 1);
    char want[256];
    snprintf(want, sizeof want, "libc.so.6: plugin path element: %s", strerror(ENOENT));
    cr_expect_str_eq(lk_runtime_diag(r, 0), want);
    lk_runtime_close(r);
}

Test(hard_cli, fifo_config_and_input_are_refused_in_one_line)
{
    write_xt();
    const char *fifo = make_fifo("cfg.fifo");
    proc r;
    const char *argv[] = {"run", fifo, "--input", tmp("x.npy"), "--target", tmp("t.npy"), NULL};
    run_cli(&r, NULL, NULL, argv);
    char want[1024];
    snprintf(want, sizeof want, "run: %s: cannot open config: not a regular file (it is a FIFO)",
             fifo);
    expect_cli_failure(&r, 2, want);

    const char *cfg = tmp("mse.json");
    write_text(cfg, "{\"loss\": \"mse\"}");
    const char *in_fifo = make_fifo("in.npy");
    const char *argv2[] = {"run", cfg, "--input", in_fifo, "--target", tmp("t.npy"), NULL};
    run_cli(&r, NULL, NULL, argv2);
    snprintf(want, sizeof want, "run: %s: cannot open: not a regular file (it is a FIFO)", in_fifo);
    expect_cli_failure(&r, 4, want);
}

Test(hard_cli, fifo_plugin_is_refused_and_the_others_served)
{
    const char *fifo = make_fifo("evil.so");
    proc r;
    const char *argv[] = {"info", "mse", NULL};
    /* as a .so in a plugin folder */
    run_cli(&r, NULL, tmpdir, argv);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    char want[1024];
    snprintf(want, sizeof want,
             "losskit: warning: plugin not loaded: %s: refused: not a regular file (it is a "
             "FIFO)\n",
             fifo);
    cr_assert_str_eq(r.err, want);
    cr_assert(strstr(r.out, "mse") != NULL, "%s", r.out);
    /* named on the path itself */
    run_cli(&r, NULL, fifo, argv);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_assert_str_eq(r.err, want);
    /* and given to check */
    const char *check[] = {"check", fifo, NULL};
    run_cli(&r, NULL, NULL, check);
    snprintf(want, sizeof want, "check: %s: refused: not a regular file (it is a FIFO)", fifo);
    expect_cli_failure(&r, 3, want);
}

Test(hard_cli, bare_plugin_name_loads_from_the_current_folder)
{
    FILE *f = fopen(LK_FIXTURE_DIR "/fx_good.so", "rb");
    cr_assert_not_null(f);
    static unsigned char so[1 << 22];
    size_t len = fread(so, 1, sizeof so, f);
    fclose(f);
    write_file(tmp("fx_good.so"), so, len);
    cr_assert_eq(chmod(tmp("fx_good.so"), 0755), 0);
    proc r;
    const char *argv[] = {"info", "fx_sq", NULL};
    run_cli(&r, tmpdir, "fx_good.so", argv);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    cr_assert_eq(r.err_len, 0, "%s", r.err);
    cr_assert(strstr(r.out, "./fx_good.so") != NULL, "%s", r.out);
}

/* ------------------------------------------------------------------------ */
/* 5. Plugins by their real path; C1 controls                                */

/* A copy of fx_good.so at path, mode 0755. */
static void copy_good_plugin(const char *path)
{
    FILE *f = fopen(LK_FIXTURE_DIR "/fx_good.so", "rb");
    cr_assert_not_null(f);
    static unsigned char so[1 << 22];
    size_t len = fread(so, 1, sizeof so, f);
    fclose(f);
    cr_assert_gt(len, 0);
    write_file(path, so, len);
    cr_assert_eq(chmod(path, 0755), 0);
}

/* A folder in the temporary folder with the given mode (chmod: no umask). */
static const char *make_dir(const char *name, mode_t mode)
{
    const char *d = tmp(name);
    cr_assert_eq(mkdir(d, 0700), 0, "mkdir %s: %s", d, strerror(errno));
    cr_assert_eq(chmod(d, mode), 0);
    return d;
}

/* remove_tmpdir empties one level: the folders made here go first. */
static void remove_paths(const char *const *paths)
{
    for (; *paths; paths++)
        if (unlink(tmp(*paths)) != 0)
            rmdir(tmp(*paths));
}

/* The folder that holds a plugin is not the only one that matters: one
 * above it that others may write lets them rename the whole branch. */
Test(hard_config, folder_above_the_plugin_writable_by_others_is_refused)
{
    char real_tmp[PATH_MAX];
    cr_assert_not_null(realpath(tmpdir, real_tmp));
    make_dir("open", 0777);
    make_dir("open/sub", 0755);
    copy_good_plugin(tmp("open/sub/fx_good.so"));
    char file[PATH_MAX + 64], want[3 * PATH_MAX];
    snprintf(file, sizeof file, "%s/open/sub/fx_good.so", real_tmp);
    snprintf(want, sizeof want,
             "refused: folder %s/open on its real path %s is writable by other users (mode 777)",
             real_tmp, file);
    expect_refused(file, want);
    /* the same through its folder on the plugin path */
    char dir[PATH_MAX + 64], line[4 * PATH_MAX];
    snprintf(dir, sizeof dir, "%s/open/sub", real_tmp);
    lk_runtime *r = open_only(dir);
    cr_assert_eq(lk_runtime_diag_count(r), 1);
    snprintf(line, sizeof line, "%s: %s", file, want);
    cr_expect_str_eq(lk_runtime_diag(r, 0), line);
    cr_expect_eq(lk_runtime_loss_count(r), 0);
    lk_runtime_close(r);
    static const char *const made[] = {"open/sub/fx_good.so", "open/sub", "open", NULL};
    remove_paths(made);
}

/* A symlink is judged by where it leads: a link in a safe folder to a
 * plugin in an open one is refused, naming the real path. */
Test(hard_config, symlink_into_an_open_folder_is_refused)
{
    char real_tmp[PATH_MAX];
    cr_assert_not_null(realpath(tmpdir, real_tmp));
    make_dir("open", 0777);
    make_dir("safe", 0755);
    copy_good_plugin(tmp("open/fx_good.so"));
    cr_assert_eq(symlink("../open/fx_good.so", tmp("safe/link.so")), 0);
    char want[4 * PATH_MAX];
    snprintf(want, sizeof want,
             "%s/safe/link.so: refused: folder %s/open on its real path %s/open/fx_good.so is "
             "writable by other users (mode 777)",
             tmpdir, real_tmp, real_tmp);
    lk_runtime *r = open_only(tmp("safe"));
    cr_assert_eq(lk_runtime_diag_count(r), 1);
    cr_expect_str_eq(lk_runtime_diag(r, 0), want);
    cr_expect_eq(lk_runtime_loss_count(r), 0);
    lk_runtime_close(r);
    static const char *const made[] = {"safe/link.so", "open/fx_good.so", "safe", "open", NULL};
    remove_paths(made);
}

/* A link to a plugin whose real path is safe loads, under the name given;
 * so does a plugin in a sticky folder that all may write, like /tmp, where
 * nobody can rename or remove what is not theirs. */
Test(hard_config, safe_symlink_and_sticky_folder_load)
{
    make_dir("safe", 0755);
    make_dir("sticky", 01777);
    copy_good_plugin(tmp("safe/fx_good.so"));
    copy_good_plugin(tmp("sticky/fx_good.so"));
    cr_assert_eq(symlink("safe/fx_good.so", tmp("link.so")), 0);
    const char *files[] = {tmp("link.so"), tmp("sticky/fx_good.so")};
    for (int i = 0; i < 2; i++) {
        lk_runtime *r = open_only(files[i]);
        cr_assert_eq(lk_runtime_diag_count(r), 0, "%s", lk_runtime_diag(r, 0));
        lk_loss_info li;
        cr_assert_eq(lk_runtime_find(r, "fx_sq", &li, NULL), LK_OK);
        cr_expect_str_eq(li.plugin_file, files[i]);
        lk_runtime_close(r);
    }
    /* but a sticky folder is still refused as a plugin folder: anyone may
     * add a file to it */
    lk_runtime *r = open_only(tmp("sticky"));
    cr_assert_eq(lk_runtime_diag_count(r), 1);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s: plugin directory refused: writable by other users (mode 777)",
             tmp("sticky"));
    cr_expect_str_eq(lk_runtime_diag(r, 0), want);
    cr_expect_eq(lk_runtime_loss_count(r), 0);
    lk_runtime_close(r);
    static const char *const made[] = {"link.so", "safe/fx_good.so", "sticky/fx_good.so",
                                       "safe",    "sticky",          NULL};
    remove_paths(made);
}

/* C1 controls (0x80-0x9f) act on terminals too (0x9b is CSI): a stray byte
 * is written \xHH, U+0080-U+009F as its two bytes \xc2\xHH; well-formed
 * UTF-8 and a stray byte from 0xa0 up are copied. */
Test(hard_config, c1_controls_are_escaped_and_utf8_is_kept)
{
    const char *json = "{\"loss\": \"a\x9b"
                       "31m|\\u009b|\xc3\xa9|\xe2\x82\xac|\xe9|\xc2\"}";
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg), LK_ERR_CONFIG);
    const char *want = SRC ": $.loss: unknown loss 'a\\x9b"
                           "31m|\\xc2\\x9b|\xc3\xa9|\xe2\x82\xac|"
                           "\xe9|\xc2'; ";
    cr_assert(strncmp(msg, want, strlen(want)) == 0, "%s", msg);
    /* an overlong form of a C1 control (c1 9b) is no UTF-8: both bytes
     * stray, the second escaped */
    const char *overlong = "{\"loss\": \"\xc1\x9b\"}";
    cr_assert_eq(lk_loss_from_json(rt, overlong, strlen(overlong), SRC, &loss, msg), LK_ERR_CONFIG);
    want = SRC ": $.loss: unknown loss '\xc1\\x9b'; ";
    cr_assert(strncmp(msg, want, strlen(want)) == 0, "%s", msg);
}

Test(hard_cli, c1_controls_in_an_argument_are_escaped)
{
    proc r;
    const char *bad_cmd[] = {"li\x9b"
                             "2Jst\xc2\x85",
                             NULL};
    run_cli(&r, NULL, NULL, bad_cmd);
    expect_cli_failure(&r, 2,
                       "unknown command 'li\\x9b"
                       "2Jst\\xc2\\x85'; run 'losskit help'");
    const char *path[] = {"list", NULL};
    run_cli(&r, NULL, "/nonexistent\x90\xc3\xa9", path);
    cr_assert_eq(r.status, 0, "exit %d; stderr: %s", r.status, r.err);
    char want[512];
    snprintf(want, sizeof want,
             "losskit: warning: plugin not loaded: /nonexistent\\x90\xc3\xa9: plugin path "
             "element: %s\n",
             strerror(ENOENT));
    cr_assert_str_eq(r.err, want);
}

/* An unknown loss lists the known ids where they are few (fx_good's two)
 * and counts them where they are many (the built-in catalogue), so that
 * the line is never cut in the middle of the list; it always says where a
 * plugin of one's own goes. */
Test(hard_config, unknown_loss_lists_few_ids_and_counts_many)
{
    lk_loss_info info;
    char err[LK_ERRMSG_CAP];
    lk_runtime *few = open_only(LK_FIXTURE_DIR "/fx_good.so");
    cr_assert_neq(lk_runtime_find(few, "nosuch", &info, err), LK_OK);
    cr_expect(strstr(err, "unknown loss 'nosuch'; known: fx_") != NULL, "%s", err);
    cr_expect(strstr(err, "(a loss of your own: put its plugin's folder on LOSSKIT_PLUGIN_PATH)"),
              "%s", err);
    lk_runtime_close(few);
    cr_assert_neq(lk_runtime_find(rt, "focl", &info, err), LK_OK);
    cr_expect(strstr(err, "did you mean 'focal'? ") != NULL, "%s", err);
    cr_expect(strstr(err, " losses are known, `losskit list` shows them (a loss of your own") !=
                  NULL,
              "%s", err);
    cr_expect(strlen(err) < LK_ERRMSG_CAP - 1, "the message fills its buffer: %s", err);
}
