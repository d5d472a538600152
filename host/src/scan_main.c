/* losskit-scan: loads one plugin in a process of its own and tells the
 * runtime what it offers (scan.h), so that a plugin that crashes, hangs or
 * prints while it is loaded harms only this process. The runtime starts it
 * as `losskit-scan --fd 3 PLUGIN.so`, with stdout and stderr on a pipe it
 * watches (anything written there refuses the plugin) and the answer on
 * descriptor 3:
 *
 *   OK\n<record>          the plugin passed every check (lk__scan_write)
 *   REFUSED\n<problem>    it is not a usable plugin (one line, no file name)
 *   NOLOAD\n<problem>     dlopen() failed (a missing library: not cached)
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "scan.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The answer goes out only after the plugin's code has run to the end of
 * its entry function, and the streams are flushed first, so that a
 * constructor's buffered printf reaches the pipe the runtime watches. */
static int answer(int fd, const char *kind, const char *text, size_t len)
{
    fflush(stdout);
    fflush(stderr);
    lk__buf b = {0};
    lk__buf_printf(&b, "%s\n", kind);
    lk__buf_add(&b, text, len);
    int rc = b.oom || write_all(fd, b.p, b.len) != 0 ? 1 : 0;
    lk__buf_free(&b);
    return rc;
}

static int refuse(int fd, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(int fd, const char *kind, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return answer(fd, kind, why, strlen(why));
}

static int scan(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], "--fd") != 0) {
        fprintf(stderr, "losskit-scan: internal helper of the losskit runtime; "
                        "usage: losskit-scan --fd N PLUGIN.so\n");
        return 2;
    }
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a crash refuses the plugin; no core file */
    int fd = atoi(argv[2]);
    const char *path = argv[3];
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return refuse(fd, LK__SCAN_NOLOAD, "cannot load: %s", why ? why : "unknown dlopen error");
    }
    lk_plugin_entry_fn entry;
    void *sym = dlsym(h, LK_PLUGIN_ENTRY_NAME);
    memcpy(&entry, &sym, sizeof entry);
    if (!sym)
        return refuse(fd, LK__SCAN_REFUSED, "no '%s' symbol: not a losskit plugin",
                      LK_PLUGIN_ENTRY_NAME);
    const lk_plugin *pl = entry(LK_ABI_MAJOR, LK_ABI_MINOR);
    if (!pl)
        return refuse(fd, LK__SCAN_REFUSED, "%s returned NULL: the plugin refused host ABI %d.%d",
                      LK_PLUGIN_ENTRY_NAME, LK_ABI_MAJOR, LK_ABI_MINOR);
    if (pl->abi_major != LK_ABI_MAJOR)
        return refuse(fd, LK__SCAN_REFUSED,
                      "built for losskit ABI %u.%u, this host implements ABI %d.%d "
                      "(the major versions must match)",
                      pl->abi_major, pl->abi_minor, LK_ABI_MAJOR, LK_ABI_MINOR);
    char why[1024];
    if (lk__validate_plugin(pl, why, sizeof why))
        return answer(fd, LK__SCAN_REFUSED, why, strlen(why));
    lk__buf rec = {0};
    lk__scan_write(pl, &rec);
    if (rec.oom)
        return refuse(fd, LK__SCAN_NOLOAD, "out of memory");
    int rc = answer(fd, LK__SCAN_OK, rec.p, rec.len);
    lk__buf_free(&rec);
    return rc;
}

/* _exit, not exit: the streams are flushed by answer(), and the plugin's
 * destructors and any at-exit reports (a sanitizer's) must not write to
 * the pipe the runtime reads as the plugin's own output. */
int main(int argc, char **argv)
{
    _exit(scan(argc, argv));
}
