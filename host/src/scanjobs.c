/* scanjobs.c: finding out what plugin files offer without loading them into
 * this process. Each file not in the cache is handed to a scanner process
 * (losskit-scan, scan_main.c) started with posix_spawn (fork without exec
 * is unsafe once the host has threads); several run at once. The parent
 * enforces the deadline and refuses a plugin whose scan crashes, hangs or
 * prints. What the scans learn is kept in a cache file keyed by each
 * file's path, size, modification and change times and inode, rewritten
 * whole and atomically (a temporary file renamed over it). */
#define _GNU_SOURCE /* dladdr, pipe2, F_DUPFD_CLOEXEC */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "scan.h"

extern char **environ;

#define SCAN_PARALLEL   8           /* scanners running at once */
#define SCAN_DEADLINE_S 5.0         /* per scanner; LOSSKIT_SCAN_TIMEOUT overrides */
#define OUT_KEEP        200         /* bytes of a plugin's stray output quoted */
#define ANSWER_CAP      (64u << 20) /* a larger answer is refused */
#define CACHE_NAME      "plugins.cache"
#define CACHE_MAGIC     "losskit plugin scan cache"

static int debug_on(void)
{
    const char *d = getenv("LOSSKIT_DEBUG");
    return d && *d;
}

/* One line on stderr under LOSSKIT_DEBUG, escaped (file names may hold
 * control characters). */
static void debug_line(const char *fmt, ...) LK__PRINTF(1, 2);
static void debug_line(const char *fmt, ...)
{
    if (!debug_on())
        return;
    char raw[2048], safe[4 * sizeof raw];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    lk__escape(safe, sizeof safe, raw);
    fprintf(stderr, "losskit: debug: %s\n", safe);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lk__scan_key_of(lk__scan_item *it, const struct stat *st)
{
    it->key[0] = (int64_t)st->st_size;
    it->key[1] = (int64_t)st->st_mtim.tv_sec;
    it->key[2] = (int64_t)st->st_mtim.tv_nsec;
    it->key[3] = (int64_t)st->st_ctim.tv_sec;
    it->key[4] = (int64_t)st->st_ctim.tv_nsec;
    it->key[5] = (int64_t)st->st_ino;
    it->key[6] = (int64_t)st->st_dev;
}

static void set_result(lk__scan_item *it, int kind, const char *text, size_t len)
{
    free(it->payload);
    it->payload = malloc(len + 1);
    if (!it->payload) {
        it->kind = LK__ITEM_FAILED;
        it->payload_len = 0;
        return;
    }
    memcpy(it->payload, text, len);
    it->payload[len] = '\0';
    it->payload_len = len;
    it->kind = kind;
}

static void set_resultf(lk__scan_item *it, int kind, const char *fmt, ...) LK__PRINTF(3, 4);
static void set_resultf(lk__scan_item *it, int kind, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    set_result(it, kind, text, strlen(text));
}

/* ------------------------------------------------------------------------ */
/* The cache                                                                 */

/* The cache file: $LOSSKIT_CACHE ("off" or empty: none), else
 * $XDG_CACHE_HOME/losskit/plugins.cache, else ~/.cache/losskit/... */
static char *cache_file(void)
{
    const char *env = getenv("LOSSKIT_CACHE");
    char *path = NULL;
    if (env)
        return *env && strcmp(env, "off") != 0 ? lk__strdup(env) : NULL;
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    size_t n;
    if (xdg && xdg[0] == '/') {
        n = strlen(xdg) + sizeof "/losskit/" CACHE_NAME;
        if ((path = malloc(n)) != NULL)
            snprintf(path, n, "%s/losskit/%s", xdg, CACHE_NAME);
    } else if (home && home[0] == '/') {
        n = strlen(home) + sizeof "/.cache/losskit/" CACHE_NAME;
        if ((path = malloc(n)) != NULL)
            snprintf(path, n, "%s/.cache/losskit/%s", home, CACHE_NAME);
    }
    return path;
}

static void cache_header(lk__buf *b)
{
    lk__buf_printf(b, "%s %d losskit %s ABI %d.%d\n", CACHE_MAGIC, LK__SCAN_FORMAT,
                   LK_VERSION_STRING, LK_ABI_MAJOR, LK_ABI_MINOR);
}

typedef struct cache_entry {
    char *path;
    int64_t key[LK__SCAN_KEY_N];
    int kind;
    char *payload;
    size_t payload_len;
} cache_entry;

typedef struct cache {
    char *file;
    cache_entry *e;
    size_t n;
    int dirty; /* rewrite it: it was missing, corrupt or foreign, or scans were added */
} cache;

static void cache_clear(cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].path);
        free(c->e[i].payload);
    }
    free(c->e);
    c->e = NULL;
    c->n = 0;
}

/* One entry: "E LEN:PATH K0 .. K6 KIND LEN:PAYLOAD\n". */
static int parse_entry(const char **pp, const char *end, cache_entry *e)
{
    const char *p = *pp;
    char *stop;
    memset(e, 0, sizeof *e);
    if (end - p < 2 || p[0] != 'E' || p[1] != ' ')
        return -1;
    p += 2;
    for (int field = 0; field < 2 + LK__SCAN_KEY_N + 1; field++) {
        if (field == 0 || field == LK__SCAN_KEY_N + 2) { /* a LEN:BYTES string */
            errno = 0;
            unsigned long long n = strtoull(p, &stop, 10);
            if (stop == p || errno || stop >= end || *stop != ':' ||
                (unsigned long long)(end - stop - 1) < n + 1 || stop[1 + n] != (field ? '\n' : ' '))
                return -1;
            char *s = malloc(n + 1);
            if (!s)
                return -1;
            memcpy(s, stop + 1, n);
            s[n] = '\0';
            if (field == 0) {
                if (memchr(s, '\0', n)) {
                    free(s);
                    return -1;
                }
                e->path = s;
            } else {
                e->payload = s;
                e->payload_len = n;
            }
            p = stop + 1 + n + 1;
        } else if (field == LK__SCAN_KEY_N + 1) {
            if (end - p < 2 || (p[0] != 'O' && p[0] != 'R') || p[1] != ' ')
                return -1;
            e->kind = p[0] == 'O' ? LK__ITEM_OK : LK__ITEM_REFUSED;
            p += 2;
        } else {
            errno = 0;
            long long v = strtoll(p, &stop, 10);
            if (stop == p || errno || stop >= end || *stop != ' ')
                return -1;
            e->key[field - 1] = v;
            p = stop + 1;
        }
    }
    *pp = p;
    return 0;
}

/* Reads the cache; a file that is not ours, not whole or not of this
 * version is ignored (and rewritten after the scans). */
static void cache_read(cache *c)
{
    c->dirty = 1;
    int fd = open(c->file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return;
    struct stat st;
    char *text = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 022) || st.st_size > (off_t)1 << 30 ||
        !(text = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return;
    }
    size_t len = 0;
    while (len < (size_t)st.st_size) {
        ssize_t r = read(fd, text + len, (size_t)st.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    text[len] = '\0';
    lk__buf head = {0};
    cache_header(&head);
    const char *p = text, *end = text + len;
    int ok = !head.oom && len >= head.len && memcmp(text, head.p, head.len) == 0;
    if (ok)
        p += head.len;
    lk__buf_free(&head);
    while (ok && p < end) {
        cache_entry e = {0};
        cache_entry *grown = realloc(c->e, (c->n + 1) * sizeof *grown);
        if (!grown || parse_entry(&p, end, &e) != 0) {
            free(e.path);
            free(e.payload);
            if (grown)
                c->e = grown;
            ok = 0;
            break;
        }
        c->e = grown;
        c->e[c->n++] = e;
    }
    free(text);
    if (!ok) {
        debug_line("cache %s is corrupt or foreign: ignored", c->file);
        cache_clear(c);
        return;
    }
    c->dirty = 0;
}

static const cache_entry *cache_find(const cache *c, const lk__scan_item *it)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].path, it->path) == 0)
            return memcmp(c->e[i].key, it->key, sizeof it->key) == 0 ? &c->e[i] : NULL;
    return NULL;
}

static void put_entry(lk__buf *b, const char *path, const int64_t *key, int kind,
                      const char *payload, size_t len)
{
    lk__buf_printf(b, "E %zu:", strlen(path));
    lk__buf_add(b, path, strlen(path));
    lk__buf_add(b, " ", 1);
    for (int k = 0; k < LK__SCAN_KEY_N; k++)
        lk__buf_printf(b, "%lld ", (long long)key[k]);
    lk__buf_printf(b, "%c %zu:", kind == LK__ITEM_OK ? 'O' : 'R', len);
    lk__buf_add(b, payload, len);
    lk__buf_add(b, "\n", 1);
}

static int cacheable(int kind)
{
    return kind == LK__ITEM_OK || kind == LK__ITEM_REFUSED;
}

/* mkdir -p of the cache file's folder, private to the user. */
static void make_parents(const char *file)
{
    char *dir = lk__strdup(file);
    for (char *s = dir ? dir + 1 : NULL; s && *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        mkdir(dir, 0700);
        *s = '/';
    }
    free(dir);
}

/* Rewrites the cache: this run's items, then the old entries about other
 * files that still exist unchanged. */
static void cache_write(cache *c, const lk__scan_item *items, size_t n, const char *drop)
{
    lk__buf b = {0};
    cache_header(&b);
    for (size_t i = 0; i < n; i++) {
        const lk__scan_item *it = &items[i];
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(items[j].path, it->path) == 0;
        if (!it->diag && cacheable(it->kind) && !dup)
            put_entry(&b, it->path, it->key, it->kind, it->payload, it->payload_len);
    }
    for (size_t i = 0; i < c->n; i++) {
        const cache_entry *e = &c->e[i];
        int seen = 0;
        for (size_t j = 0; j < n && !seen; j++)
            seen = strcmp(items[j].path, e->path) == 0;
        struct stat st;
        lk__scan_item now = {0};
        if (seen || (drop && strcmp(drop, e->path) == 0) || stat(e->path, &st) != 0)
            continue;
        lk__scan_key_of(&now, &st);
        if (memcmp(now.key, e->key, sizeof now.key) == 0)
            put_entry(&b, e->path, e->key, e->kind, e->payload, e->payload_len);
    }
    size_t tn = strlen(c->file) + 8;
    char *tmp = b.oom ? NULL : malloc(tn);
    if (!tmp) {
        lk__buf_free(&b);
        return;
    }
    snprintf(tmp, tn, "%s.XXXXXX", c->file);
    make_parents(c->file);
    int fd = mkostemp(tmp, O_CLOEXEC);
    int ok = fd >= 0;
    for (size_t done = 0; ok && done < b.len;) {
        ssize_t w = write(fd, b.p + done, b.len - done);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        done += ok ? (size_t)w : 0;
    }
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (ok && rename(tmp, c->file) != 0)
        ok = 0;
    if (!ok && fd >= 0)
        unlink(tmp);
    if (!ok)
        debug_line("cannot write the cache %s: %s", c->file, strerror(errno));
    free(tmp);
    lk__buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Scanners                                                                  */

/* The scanner next to this library in the build tree, else the installed
 * one; $LOSSKIT_SCANNER names another (tests, relocated installs). */
static const char *scanner_path(void)
{
    const char *env = getenv("LOSSKIT_SCANNER");
    if (env && *env)
        return env;
    Dl_info info;
    void *self = (void *)(uintptr_t)&scanner_path;
    if (!dladdr(self, &info) || !info.dli_fname)
        return LK_INSTALL_SCANNER;
    char *real = realpath(info.dli_fname, NULL);
    int in_build = real && strncmp(real, LK_BUILD_ROOT "/", strlen(LK_BUILD_ROOT) + 1) == 0;
    free(real);
    return in_build ? LK_BUILD_SCANNER : LK_INSTALL_SCANNER;
}

static double scan_deadline(void)
{
    const char *env = getenv("LOSSKIT_SCAN_TIMEOUT");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (!*end && v > 0 && v <= 3600)
            return v;
    }
    return SCAN_DEADLINE_S;
}

typedef struct job {
    lk__scan_item *it;
    pid_t pid;
    int out_fd, ans_fd; /* -1 once at end of file */
    lk__buf out, ans;
    double deadline;
    int reaped, status, killed, overflow;
} job;

/* A descriptor at 10 or above, close-on-exec: never one of 0..3, which
 * the file actions below set up in the child. */
static int high_fd(int fd)
{
    if (fd < 0 || fd >= 10)
        return fd;
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return hi;
}

static int start_job(job *j, lk__scan_item *it, const char *scanner, double timeout)
{
    int out[2] = {-1, -1}, ans[2] = {-1, -1};
    memset(j, 0, sizeof *j);
    j->it = it;
    j->pid = -1;
    j->out_fd = j->ans_fd = -1;
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(ans, O_CLOEXEC) != 0)
        goto fail;
    for (int k = 0; k < 2; k++) {
        out[k] = high_fd(out[k]);
        ans[k] = high_fd(ans[k]);
    }
    if (out[0] < 0 || out[1] < 0 || ans[0] < 0 || ans[1] < 0)
        goto fail;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    posix_spawn_file_actions_adddup2(&fa, ans[1], 3);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {(char *)scanner, "--fd", "3", j->it->path, NULL};
    int rc = posix_spawn(&j->pid, scanner, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        j->pid = -1;
        goto fail;
    }
    close(out[1]);
    close(ans[1]);
    j->out_fd = out[0];
    j->ans_fd = ans[0];
    fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(j->ans_fd, F_SETFL, O_NONBLOCK);
    j->deadline = now_s() + timeout;
    debug_line("scanning %s", j->it->path);
    return 0;
fail:;
    int e = errno;
    for (int k = 0; k < 2; k++) {
        if (out[k] >= 0)
            close(out[k]);
        if (ans[k] >= 0)
            close(ans[k]);
    }
    set_resultf(j->it, LK__ITEM_FAILED, "cannot scan: cannot start the plugin scanner %s: %s",
                scanner, strerror(e));
    return -1;
}

/* Reads what is there; closes the descriptor at end of file. */
static void drain(job *j, int *fd, lk__buf *b, size_t keep)
{
    char chunk[65536];
    for (;;) {
        ssize_t r = read(*fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return; /* EAGAIN */
        if (r == 0) {
            close(*fd);
            *fd = -1;
            return;
        }
        size_t room = b->len < keep ? keep - b->len : 0;
        lk__buf_add(b, chunk, (size_t)r < room ? (size_t)r : room);
        if ((size_t)r > room) {
            if (keep == ANSWER_CAP)
                j->overflow = 1;
            if (b->len == 0) /* stray output beyond what is quoted still counts */
                lk__buf_add(b, " ", 1);
        }
    }
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
    }
}

/* What a finished scan says about its file. */
static void judge(job *j, double timeout)
{
    lk__scan_item *it = j->it;
    if (j->killed) {
        set_resultf(it, LK__ITEM_FAILED,
                    "refused: its scan did not finish within %g s (it hangs while being loaded: "
                    "in a constructor or its entry function); the scanner was killed",
                    timeout);
        return;
    }
    if (WIFSIGNALED(j->status)) {
        int sig = WTERMSIG(j->status);
        set_resultf(it, LK__ITEM_REFUSED,
                    "refused: it crashed while being scanned (killed by signal %d, %s, in a "
                    "constructor or its entry function)",
                    sig, signal_name(sig));
        return;
    }
    if (j->out.len > 0) {
        char first[OUT_KEEP + 1];
        size_t n = strcspn(j->out.p, "\n");
        snprintf(first, sizeof first, "%.*s", (int)n, j->out.p);
        set_resultf(it, LK__ITEM_REFUSED,
                    "refused: it printed to stdout or stderr while being scanned (a plugin must "
                    "not print when it is loaded): '%s'",
                    first);
        return;
    }
    if (!WIFEXITED(j->status) || WEXITSTATUS(j->status) != 0) {
        set_resultf(it, LK__ITEM_REFUSED,
                    "refused: its scan exited with status %d (the plugin ended the process while "
                    "being loaded)",
                    WIFEXITED(j->status) ? WEXITSTATUS(j->status) : -1);
        return;
    }
    if (j->overflow || j->ans.oom) {
        set_resultf(it, LK__ITEM_REFUSED, "refused: its descriptors are too large (over %u MiB)",
                    ANSWER_CAP >> 20);
        return;
    }
    const char *a = j->ans.p ? j->ans.p : "";
    const char *nl = memchr(a, '\n', j->ans.len);
    size_t head = nl ? (size_t)(nl - a) : 0;
    const char *body = nl ? nl + 1 : "";
    size_t body_len = nl ? j->ans.len - head - 1 : 0;
    if (nl && head == strlen(LK__SCAN_OK) && memcmp(a, LK__SCAN_OK, head) == 0)
        set_result(it, LK__ITEM_OK, body, body_len);
    else if (nl && head == strlen(LK__SCAN_REFUSED) && memcmp(a, LK__SCAN_REFUSED, head) == 0)
        set_result(it, LK__ITEM_REFUSED, body, body_len);
    else if (nl && head == strlen(LK__SCAN_NOLOAD) && memcmp(a, LK__SCAN_NOLOAD, head) == 0)
        set_result(it, LK__ITEM_FAILED, body, body_len);
    else
        set_resultf(it, LK__ITEM_REFUSED,
                    "refused: its scan gave no answer (the plugin ended the process while being "
                    "loaded)");
}

static void run_jobs(lk__scan_item **todo, size_t n)
{
    const char *scanner = scanner_path();
    double timeout = scan_deadline();
    job jobs[SCAN_PARALLEL];
    size_t next = 0, active = 0;
    while (next < n || active > 0) {
        while (active < SCAN_PARALLEL && next < n) {
            if (start_job(&jobs[active], todo[next++], scanner, timeout) == 0)
                active++;
        }
        if (active == 0)
            break;
        struct pollfd pfd[2 * SCAN_PARALLEL];
        nfds_t np = 0;
        double t = now_s(), wait = 1e9;
        for (size_t k = 0; k < active; k++) {
            job *j = &jobs[k];
            if (j->out_fd >= 0)
                pfd[np++] = (struct pollfd){j->out_fd, POLLIN, 0};
            if (j->ans_fd >= 0)
                pfd[np++] = (struct pollfd){j->ans_fd, POLLIN, 0};
            double left = j->deadline - t;
            /* both pipes closed but not yet reaped: look again soon */
            if (j->out_fd < 0 && j->ans_fd < 0 && left > 0.001)
                left = 0.001;
            wait = left < wait ? left : wait;
        }
        int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        if (poll(pfd, np, ms) < 0 && errno != EINTR)
            for (size_t k = 0; k < active; k++) /* cannot wait: end them all now */
                jobs[k].deadline = 0;
        t = now_s();
        for (size_t k = 0; k < active;) {
            job *j = &jobs[k];
            if (j->out_fd >= 0)
                drain(j, &j->out_fd, &j->out, OUT_KEEP);
            if (j->ans_fd >= 0)
                drain(j, &j->ans_fd, &j->ans, ANSWER_CAP);
            pid_t w = j->out_fd < 0 && j->ans_fd < 0 ? waitpid(j->pid, &j->status, WNOHANG) : 0;
            if (w == j->pid)
                j->reaped = 1;
            else if (w < 0 && errno == ECHILD) /* SIGCHLD ignored: reaped by the kernel */
                j->reaped = 1, j->status = 0;
            else if (t >= j->deadline) {
                kill(j->pid, SIGKILL);
                while (waitpid(j->pid, &j->status, 0) < 0 && errno == EINTR)
                    ;
                j->killed = j->reaped = 1;
            }
            if (!j->reaped) {
                k++;
                continue;
            }
            if (j->out_fd >= 0)
                close(j->out_fd);
            if (j->ans_fd >= 0)
                close(j->ans_fd);
            judge(j, timeout);
            lk__buf_free(&j->out);
            lk__buf_free(&j->ans);
            jobs[k] = jobs[--active];
        }
    }
}

void lk__scan_items(lk__scan_item *items, size_t n)
{
    cache c = {cache_file(), NULL, 0, 0};
    if (c.file)
        cache_read(&c);
    lk__scan_item **todo = calloc(n ? n : 1, sizeof *todo);
    size_t n_todo = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        lk__scan_item *it = &items[i];
        if (it->diag)
            continue;
        const cache_entry *e = cache_find(&c, it);
        size_t same = 0; /* the file met earlier on the path, scanned once */
        while (same < i && (items[same].diag || strcmp(items[same].path, it->path) != 0 ||
                            memcmp(items[same].key, it->key, sizeof it->key) != 0))
            same++;
        if (same < i) {
            it->kind = -1 - (int)same; /* resolved below, after the scans */
        } else if (e) {
            set_result(it, e->kind, e->payload, e->payload_len);
            it->from_cache = 1;
            hits++;
        } else if (todo) {
            todo[n_todo++] = it;
        } else {
            set_resultf(it, LK__ITEM_FAILED, "cannot scan: out of memory");
        }
    }
    if (n_todo)
        run_jobs(todo, n_todo);
    for (size_t i = 0; i < n; i++)
        if (!items[i].diag && items[i].kind < 0) {
            const lk__scan_item *first = &items[-1 - items[i].kind];
            set_result(&items[i], first->kind, first->payload ? first->payload : "",
                       first->payload_len);
        }
    for (size_t k = 0; k < n_todo; k++)
        c.dirty |= cacheable(todo[k]->kind);
    debug_line("plugin cache %s: %zu hit%s, %zu scanned", c.file ? c.file : "(off)", hits,
               hits == 1 ? "" : "s", n_todo);
    if (c.file && c.dirty)
        cache_write(&c, items, n, NULL);
    free(todo);
    cache_clear(&c);
    free(c.file);
}

void lk__scan_forget(const char *path)
{
    cache c = {cache_file(), NULL, 0, 0};
    if (!c.file)
        return;
    cache_read(&c);
    int found = 0;
    for (size_t i = 0; i < c.n; i++)
        found |= strcmp(c.e[i].path, path) == 0;
    if (found)
        cache_write(&c, NULL, 0, path);
    cache_clear(&c);
    free(c.file);
}
