/* test_scan: plugins are scanned in processes of their own. A plugin that
 * crashes, hangs or prints while it is loaded is refused with one line and
 * costs nothing else: `losskit list`, `run` of another loss and `check`
 * all finish within seconds; what the scans learn is cached and trusted
 * only for unchanged files; a plugin enters the host process only when one
 * of its losses is built, and must then offer what its scan found. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "losskit/losskit.h"

#define TMPDIR_TAG "scan"
#include "test_tmpdir.h"

#define FX(name)      LK_FIXTURE_DIR "/" name ".so"
#define SCAN_FX(name) LK_FIXTURE_DIR "/scan/" name ".so"

TestSuite(scan, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 120);

/* ------------------------------------------------------------------------ */
/* Running the command                                                       */

typedef struct proc {
    int status; /* exit code; 128 + signal when killed */
    char *out, *err;
    size_t out_len, err_len;
    double seconds;
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the losskit command with argv[1..] in tmpdir, with
 * LOSSKIT_PLUGIN_PATH = plugin_path and the "NAME=VALUE" strings of env
 * (NULL-terminated, may be NULL; a bare NAME unsets it) on top of the suite's
 * environment, whose cache is off unless env says otherwise. */
static proc run_env(const char *plugin_path, const char *const *env, const char *const *args)
{
    int po[2], pe[2];
    cr_assert_eq(pipe(po), 0);
    cr_assert_eq(pipe(pe), 0);
    fflush(NULL);
    double t0 = now_s();
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        if (chdir(tmpdir) != 0)
            _exit(126);
        setenv("LOSSKIT_PLUGIN_PATH", plugin_path, 1);
        setenv("LOSSKIT_CACHE", "off", 1);
        unsetenv("LOSSKIT_DEBUG");
        for (size_t i = 0; env && env[i]; i++) {
            if (strchr(env[i], '='))
                putenv((char *)env[i]);
            else
                unsetenv(env[i]); /* a bare name: unset */
        }
        char *argv[16] = {(char *)LK_CLI_PATH};
        for (size_t i = 0; args[i] && i < 14; i++)
            argv[i + 1] = (char *)args[i];
        execv(argv[0], argv);
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
        cr_assert_geq(n, 0);
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
        cr_assert_eq(errno, EINTR);
    r.seconds = now_s() - t0;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return r;
}

static size_t count_lines_with(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *hit = strstr(line, what);
        n += hit && hit < line + len;
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    cr_assert_not_null(in, "%s: %s", from, strerror(errno));
    char tmpname[PATH_MAX + 16];
    snprintf(tmpname, sizeof tmpname, "%s.new", to);
    FILE *out = fopen(tmpname, "wb");
    cr_assert_not_null(out, "%s: %s", tmpname, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    cr_assert_eq(fclose(out), 0);
    chmod(tmpname, 0755);
    /* a new inode, as an install or a rebuild makes */
    cr_assert_eq(rename(tmpname, to), 0, "rename %s: %s", to, strerror(errno));
}

/* The one line of stderr naming file, which must mention what. */
static void expect_refusal(const proc *p, const char *file, const char *what)
{
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s: refused: ", file);
    cr_expect_eq(count_lines_with(p->err, want), 1, "one line refusing %s, got:\n%s", file, p->err);
    const char *line = strstr(p->err, want);
    if (!line)
        return;
    const char *nl = strchr(line, '\n');
    char one[2048];
    snprintf(one, sizeof one, "%.*s", (int)(nl ? nl - line : (long)strlen(line)), line);
    cr_expect_not_null(strstr(one, what), "the refusal does not mention \"%s\": %s", what, one);
}

/* ------------------------------------------------------------------------ */
/* Plugins that misbehave while being loaded                                 */

static const char *const list_args[] = {"list", NULL};

Test(scan, crash_in_the_entry_is_refused_and_the_rest_listed)
{
    proc p = run_env(SCAN_FX("fx_scan_segv") ":" FX("fx_good"), NULL, list_args);
    cr_expect_eq(p.status, 0, "list: %d\n%s", p.status, p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_segv"), "crashed while being scanned");
    expect_refusal(&p, SCAN_FX("fx_scan_segv"), "signal 11, SIGSEGV");
    cr_expect_not_null(strstr(p.out, "fx_sq"), "fx_good's losses are listed:\n%s", p.out);
    cr_expect_not_null(strstr(p.out, "mse"), "the built-in losses are listed:\n%s", p.out);
    cr_expect_null(strstr(p.out, "fx_scan_1"), "the refused loss is not listed:\n%s", p.out);
    cr_expect_lt(p.seconds, 5.0, "list took %.2f s", p.seconds);
    proc_free(&p);
}

Test(scan, run_of_another_loss_works_beside_a_crashing_plugin)
{
    static const double x[3] = {1.0, 2.0, 4.0}, t[3] = {0.0, 2.0, 2.0};
    static const int64_t shape[1] = {3};
    char err[LK_ERRMSG_CAP];
    lk_tensor tx = {(void *)x, LK_DTYPE_F64, 1, shape, NULL};
    lk_tensor tt = {(void *)t, LK_DTYPE_F64, 1, shape, NULL};
    cr_assert_eq(lk_npy_write(tmp("x.npy"), &tx, err), LK_OK, "%s", err);
    cr_assert_eq(lk_npy_write(tmp("t.npy"), &tt, err), LK_OK, "%s", err);
    FILE *f = fopen(tmp("mse.json"), "w");
    cr_assert_not_null(f);
    fputs("{\"loss\": \"mse\", \"reduction\": \"sum\"}", f);
    fclose(f);
    static const char *const args[] = {"run",      "mse.json", "--input", "x.npy",
                                       "--target", "t.npy",    "--json",  NULL};
    proc p = run_env(SCAN_FX("fx_scan_segv"), NULL, args);
    cr_expect_eq(p.status, 0, "run: %d\n%s", p.status, p.err);
    cr_expect_eq(count_lines_with(p.err, "SIGSEGV"), 1, "a warning names the crash:\n%s", p.err);
    cJSON *doc = cJSON_Parse(p.out);
    cr_assert_not_null(doc, "run --json printed no JSON:\n%s", p.out);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(doc, "value");
    cr_assert(cJSON_IsNumber(value), "no value in:\n%s", p.out);
    cr_expect_float_eq(value->valuedouble, 5.0, 1e-12, "sum of squares: %g", value->valuedouble);
    cJSON_Delete(doc);
    cr_expect_lt(p.seconds, 5.0, "run took %.2f s", p.seconds);
    proc_free(&p);
}

Test(scan, check_of_a_crashing_plugin_reports_the_crash)
{
    static const char *const args[] = {"check", SCAN_FX("fx_scan_segv"), NULL};
    proc p = run_env("", NULL, args);
    cr_expect_eq(p.status, 3, "check exits 3 on a refused plugin: %d\n%s", p.status, p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_segv"), "SIGSEGV");
    cr_expect_lt(p.seconds, 5.0, "check took %.2f s", p.seconds);
    proc_free(&p);
}

Test(scan, hang_in_a_constructor_is_refused_by_the_deadline)
{
    static const char *const env[] = {"LOSSKIT_SCAN_TIMEOUT=1", NULL};
    proc p = run_env(SCAN_FX("fx_scan_hang") ":" FX("fx_good"), env, list_args);
    cr_expect_eq(p.status, 0, "list: %d\n%s", p.status, p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_hang"), "did not finish within 1 s");
    cr_expect_not_null(strstr(p.out, "fx_sq"), "fx_good's losses are listed:\n%s", p.out);
    cr_expect_lt(p.seconds, 4.0, "list took %.2f s with a 1 s deadline", p.seconds);
    proc_free(&p);
}

Test(scan, printing_constructor_is_refused_and_json_stays_valid)
{
    static const char *const args[] = {"list", "--json", NULL};
    proc p = run_env(SCAN_FX("fx_scan_print") ":" FX("fx_good"), NULL, args);
    cr_expect_eq(p.status, 0, "list --json: %d\n%s", p.status, p.err);
    cJSON *doc = cJSON_Parse(p.out);
    cr_assert_not_null(doc, "list --json is not JSON:\n%s", p.out);
    cr_expect_null(strstr(p.out, "hello from a constructor\n"), "the constructor's line leaked");
    const cJSON *diags = cJSON_GetObjectItemCaseSensitive(doc, "diagnostics");
    cr_assert(cJSON_IsArray(diags));
    int found = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, diags)
    {
        found += cJSON_IsString(d) && strstr(d->valuestring, "fx_scan_print.so: refused: ") &&
                 strstr(d->valuestring, "printed to stdout or stderr") &&
                 (strstr(d->valuestring, "'hello from a constructor'") ||
                  strstr(d->valuestring, "'and a warning too'"));
    }
    cr_expect_eq(found, 1, "one diagnostic refuses the printing plugin:\n%s", p.out);
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(doc, "losses");
    int good = 0, refused = 0;
    cJSON_ArrayForEach(d, losses)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
        good += cJSON_IsString(id) && strcmp(id->valuestring, "fx_sq") == 0;
        refused += cJSON_IsString(id) && strcmp(id->valuestring, "fx_scan_3") == 0;
    }
    cr_expect_eq(good, 1, "fx_sq is listed");
    cr_expect_eq(refused, 0, "the printing plugin's loss is not listed");
    cJSON_Delete(doc);
    proc_free(&p);
}

Test(scan, constructor_that_exits_is_refused)
{
    proc p = run_env(SCAN_FX("fx_scan_exit") ":" FX("fx_good"), NULL, list_args);
    cr_expect_eq(p.status, 0, "list: %d\n%s", p.status, p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_exit"), "gave no answer");
    cr_expect_not_null(strstr(p.out, "fx_sq"), "fx_good's losses are listed:\n%s", p.out);
    proc_free(&p);
}

Test(scan, check_kills_a_kernel_that_blocks_sigalrm)
{
    /* check's only clock used to be an alarm() in its child */
    static const char *const env[] = {"LOSSKIT_CHECK_TIMEOUT=2", NULL};
    static const char *const args[] = {"check", SCAN_FX("fx_scan_sigalrm"), NULL};
    proc p = run_env("", env, args);
    cr_expect_eq(p.status, 1, "a check failed: %d\n%s%s", p.status, p.out, p.err);
    cr_expect_not_null(strstr(p.out, "no result within 2 s"), "a timeout is reported:\n%s", p.out);
    cr_expect_lt(p.seconds, 10.0, "check took %.2f s with a 2 s deadline", p.seconds);
    proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* The cache                                                                 */

static proc list_cached(const char *path)
{
    static char cache_env[PATH_MAX + 32];
    snprintf(cache_env, sizeof cache_env, "LOSSKIT_CACHE=%s", tmp("plugins.cache"));
    const char *const env[] = {cache_env, "LOSSKIT_DEBUG=1", NULL};
    return run_env(path, env, list_args);
}

Test(scan, second_run_uses_the_cache_and_a_touched_file_is_rescanned)
{
    copy_file(FX("fx_good"), tmp("mine.so"));
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s:%s", tmp("mine.so"), SCAN_FX("fx_scan_segv"));
    proc p = list_cached(path);
    cr_expect_eq(p.status, 0, "%s", p.err);
    size_t first = count_lines_with(p.err, "debug: scanning ");
    cr_expect_geq(first, 3, "the first run scans every file (mine, segv, built-ins):\n%s", p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_segv"), "SIGSEGV");
    proc_free(&p);

    p = list_cached(path);
    cr_expect_eq(count_lines_with(p.err, "debug: scanning "), 0, "second run scanned:\n%s", p.err);
    expect_refusal(&p, SCAN_FX("fx_scan_segv"), "SIGSEGV"); /* the refusal is cached too */
    cr_expect_not_null(strstr(p.out, "fx_sq"), "listed from the cache:\n%s", p.out);
    proc_free(&p);

    /* a new modification time: rescanned, that file alone */
    struct timespec times[2] = {{0, UTIME_NOW}, {time(NULL) + 5, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, tmp("mine.so"), times, 0), 0);
    p = list_cached(path);
    cr_expect_eq(count_lines_with(p.err, "debug: scanning "), 1, "one rescan:\n%s", p.err);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "debug: scanning %s", tmp("mine.so"));
    cr_expect_eq(count_lines_with(p.err, want), 1, "the touched file is rescanned:\n%s", p.err);
    proc_free(&p);

    /* the same size and times but another file (a new inode): rescanned */
    struct stat before;
    cr_assert_eq(stat(tmp("mine.so"), &before), 0);
    copy_file(FX("fx_good"), tmp("mine.so"));
    struct timespec same[2] = {{0, UTIME_NOW}, before.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, tmp("mine.so"), same, 0), 0);
    p = list_cached(path);
    cr_expect_eq(count_lines_with(p.err, want), 1, "the replaced file is rescanned:\n%s", p.err);
    proc_free(&p);
}

Test(scan, corrupt_cache_is_ignored_and_rewritten)
{
    static const char *const junk[] = {
        "garbage\n",
        "losskit plugin scan cache 3 losskit 0.1.0 ABI 1.2\nE 5:/nope 1 2\n",
        "losskit plugin scan cache 99 losskit 9.9.9 ABI 9.9\n",
    };
    for (size_t k = 0; k < sizeof junk / sizeof junk[0]; k++) {
        FILE *f = fopen(tmp("plugins.cache"), "w");
        cr_assert_not_null(f);
        fputs(junk[k], f);
        fclose(f);
        chmod(tmp("plugins.cache"), 0600);
        proc p = list_cached(FX("fx_good"));
        cr_expect_eq(p.status, 0, "%s", p.err);
        cr_expect_geq(count_lines_with(p.err, "debug: scanning "), 2, "case %zu: rescanned:\n%s", k,
                      p.err);
        cr_expect_not_null(strstr(p.out, "fx_sq"), "case %zu: listed:\n%s", k, p.out);
        cr_expect_null(strstr(p.err, "warning"), "case %zu: no warning:\n%s", k, p.err);
        proc_free(&p);
        p = list_cached(FX("fx_good"));
        cr_expect_eq(count_lines_with(p.err, "debug: scanning "), 0,
                     "case %zu: the rewritten cache serves the next run:\n%s", k, p.err);
        proc_free(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* Loading on first use                                                      */

static lk_runtime *open_path(const char *path)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = path;
    opts.use_env_path = 0;
    opts.use_default_path = 0;
    opts.threads = 1;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    cr_assert_eq(lk_runtime_open(&opts, &rt, err), LK_OK, "%s", err);
    return rt;
}

static int loaded_here(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

Test(scan, a_plugin_enters_the_process_when_a_loss_is_built)
{
    setenv("LOSSKIT_CACHE", "off", 1);
    copy_file(FX("fx_good"), tmp("lazy.so"));
    lk_runtime *rt = open_path(tmp("lazy.so"));
    cr_expect_eq(lk_runtime_diag_count(rt), 0, "%s", lk_runtime_diag(rt, 0));
    lk_loss_info info;
    cr_assert_eq(lk_runtime_find(rt, "fx_sq", &info, NULL), LK_OK);
    cr_expect_eq(loaded_here(tmp("lazy.so")), 0, "listing loaded the plugin");
    const lk_plugin *pl = lk_runtime_plugin(rt, info.plugin_file);
    cr_assert_not_null(pl, "lk_runtime_plugin(%s)", info.plugin_file);
    cr_expect_str_eq(pl->name, info.plugin_name);
    cr_expect_null(lk_runtime_plugin(rt, "/no/such.so"));
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"fx_sq\"}";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), "t", &loss, err), LK_OK, "%s", err);
    cr_expect_eq(loaded_here(tmp("lazy.so")), 1, "building a loss did not load the plugin");
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(scan, a_plugin_that_changed_since_its_scan_is_refused_at_load)
{
    setenv("LOSSKIT_CACHE", "off", 1);
    copy_file(FX("fx_good"), tmp("changing.so"));
    lk_runtime *rt = open_path(tmp("changing.so"));
    copy_file(FX("fx_shadow"), tmp("changing.so")); /* also serves fx_sq, differently */
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"fx_sq\"}";
    cr_expect_eq(lk_loss_from_json(rt, json, strlen(json), "t.json", &loss, err), LK_ERR_LOAD, "%s",
                 err);
    cr_expect_null(loss);
    cr_expect_not_null(strstr(err, "no longer offers what its scan found"), "%s", err);
    cr_expect_not_null(strstr(err, "changing.so"), "%s", err);
    cr_expect_not_null(strstr(err, "t.json"), "%s", err);
    lk_runtime_close(rt);
}

Test(scan, cold_scan_of_the_built_in_plugins_is_quick)
{
    proc p = run_env("", NULL, list_args);
    cr_expect_eq(p.status, 0, "%s", p.err);
    cr_expect_str_empty(p.err, "no warnings: %s", p.err);
    cr_expect_lt(p.seconds, 1.0, "a cold list took %.2f s", p.seconds);
    proc_free(&p);
}

static const char *summary_of(lk_runtime *rt, const char *id)
{
    lk_loss_info info;
    cr_assert_eq(lk_runtime_find(rt, id, &info, NULL), LK_OK, "%s", id);
    return info.desc->summary;
}

Test(scan, a_cache_that_lies_is_caught_at_load_and_forgotten)
{
    setenv("LOSSKIT_CACHE", tmp("plugins.cache"), 1);
    copy_file(FX("fx_good"), tmp("good.so"));
    lk_runtime *rt = open_path(tmp("good.so"));
    cr_expect_str_eq(summary_of(rt, "fx_sq"), "scaled sum of squares (fixture)");
    lk_runtime_close(rt);

    /* the same length, so the entry still parses: only the load can tell */
    FILE *f = fopen(tmp("plugins.cache"), "r+b");
    cr_assert_not_null(f);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text, f);
    char *at = memmem(text, n, "31:scaled sum of squares (fixture)", 34);
    cr_assert_not_null(at, "the cache holds fx_sq's summary");
    at[3] = 'S';
    rewind(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);

    rt = open_path(tmp("good.so"));
    cr_expect_str_eq(summary_of(rt, "fx_sq"), "Scaled sum of squares (fixture)",
                     "served from the cache");
    lk_loss *loss = NULL;
    char err[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"fx_sq\"}";
    cr_expect_eq(lk_loss_from_json(rt, json, strlen(json), "t.json", &loss, err), LK_ERR_LOAD, "%s",
                 err);
    cr_expect_not_null(strstr(err, "no longer offers what its scan found"), "%s", err);
    lk_runtime_close(rt);

    rt = open_path(tmp("good.so"));
    cr_expect_str_eq(summary_of(rt, "fx_sq"), "scaled sum of squares (fixture)", "rescanned");
    cr_expect_eq(lk_loss_from_json(rt, json, strlen(json), "t.json", &loss, err), LK_OK, "%s", err);
    lk_loss_free(loss);
    lk_runtime_close(rt);
}

Test(scan, without_a_scanner_every_plugin_is_refused_in_one_line)
{
    static const char *const env[] = {"LOSSKIT_SCANNER=/nonexistent/losskit-scan", NULL};
    proc p = run_env(FX("fx_good"), env, list_args);
    cr_expect_eq(p.status, 0, "list: %d\n%s", p.status, p.err);
    cr_expect_eq(count_lines_with(p.err, "fx_good.so: cannot scan: cannot start the plugin "
                                         "scanner /nonexistent/losskit-scan"),
                 1, "%s", p.err);
    cr_expect_null(strstr(p.out, "fx_sq"), "nothing unscanned is listed:\n%s", p.out);
    proc_free(&p);
}

Test(scan, cache_off_writes_no_file)
{
    static char cache_env[PATH_MAX + 32];
    snprintf(cache_env, sizeof cache_env, "XDG_CACHE_HOME=%s", tmpdir);
    const char *const env[] = {cache_env, NULL}; /* run_env sets LOSSKIT_CACHE=off */
    proc p = run_env(FX("fx_good"), env, list_args);
    cr_expect_eq(p.status, 0, "%s", p.err);
    struct stat st;
    cr_expect_neq(stat(tmp("losskit"), &st), 0, "LOSSKIT_CACHE=off made a cache folder");
    proc_free(&p);
    const char *const env_default[] = {cache_env, "LOSSKIT_CACHE", NULL}; /* unset: the default */
    p = run_env(FX("fx_good"), env_default, list_args);
    cr_expect_eq(p.status, 0, "%s", p.err);
    cr_expect_eq(stat(tmp("losskit/plugins.cache"), &st), 0,
                 "the default cache is $XDG_CACHE_HOME/losskit/plugins.cache");
    cr_expect_eq(st.st_mode & 077, 0, "the cache is private: mode %o", st.st_mode & 0777);
    proc_free(&p);
    unlink(tmp("losskit/plugins.cache"));
    rmdir(tmp("losskit"));
}

/* The same file twice on the path is one plugin: scanned once, its losses
 * listed once, nothing shadowed (it used to shadow itself). */
Test(scan, a_file_twice_on_the_path_is_scanned_and_listed_once)
{
    static const char *const env[] = {"LOSSKIT_DEBUG=1", NULL};
    proc p = run_env(FX("fx_good") ":" FX("fx_good"), env, list_args);
    cr_expect_eq(p.status, 0, "%s", p.err);
    cr_expect_eq(count_lines_with(p.err, "debug: scanning " FX("fx_good")), 1, "%s", p.err);
    cr_expect_eq(count_lines_with(p.out, "shadowed: "), 0, "nothing is shadowed:\n%s", p.out);
    cr_expect_eq(count_lines_with(p.out, "fx_sq "), 1, "fx_sq is listed once:\n%s", p.out);
    proc_free(&p);
}
