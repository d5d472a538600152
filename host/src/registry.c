/* registry.c: finds loss plugins, registers what their scans found, and
 * loads a plugin into this process when one of its losses is first built.
 *
 * The search path is a colon-separated list of directories and .so files,
 * read in order; within a directory, files are taken in name order so that
 * the result never depends on the file system's listing order. Every file
 * is scanned in a process of its own (scanjobs.c, scan_main.c), so no
 * plugin code runs here until a loss is used. A loss id met a second time
 * is kept but marked shadowed: the first one serves. A plugin that fails
 * any check is refused whole, with one diagnostic line "FILE: problem", and
 * the others are served. */
#define _GNU_SOURCE /* dladdr */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "scan.h"

static void add_diag(lk__registry *reg, const char *fmt, ...) LK__PRINTF(2, 3);

/* A diagnostic is as long as it needs to be (a long path must not cut off
 * the reason) and escaped (lk__escape): one line whatever the file names. */
static void add_diag(lk__registry *reg, const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *raw = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (raw)
        vsnprintf(raw, (size_t)n + 1, fmt, again);
    va_end(again);
    char *line = raw ? malloc(4 * (size_t)n + 1) : NULL;
    if (line)
        lk__escape(line, 4 * (size_t)n + 1, raw);
    free(raw);
    char **grown = line ? realloc(reg->diags, (reg->n_diags + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(line);
        return;
    }
    reg->diags = grown;
    reg->diags[reg->n_diags++] = line;
}

/* A file or directory that someone else could write is refused: whoever
 * can write it can make the host run their code. */
/* Whether gid is the private group of uid (the user-private-group scheme
 * that umask 002 relies on): the group has the user's name and no listed
 * members, and no other account has it as its primary group. */
static int private_group_of(uid_t uid, gid_t gid)
{
    struct passwd *pw = getpwuid(uid);
    if (!pw || pw->pw_gid != gid)
        return 0;
    char user[256];
    snprintf(user, sizeof user, "%s", pw->pw_name);
    struct group *gr = getgrgid(gid);
    if (!gr || strcmp(gr->gr_name, user) != 0 || (gr->gr_mem && gr->gr_mem[0]))
        return 0;
    int others = 0;
    setpwent();
    while ((pw = getpwent()) != NULL)
        others |= pw->pw_gid == gid && pw->pw_uid != uid;
    endpwent();
    return !others;
}

/* Refused: writable by others, writable by a group other than the owner's
 * own private group, or owned by someone but root and the current user. */
static int unsafe_owner(const struct stat *st)
{
    if (st->st_mode & S_IWOTH)
        return 1;
    if (st->st_uid != 0 && st->st_uid != geteuid())
        return 1;
    return (st->st_mode & S_IWGRP) && !private_group_of(st->st_uid, st->st_gid);
}

const lk__entry *lk__registry_find(const lk__registry *reg, const char *id)
{
    for (size_t i = 0; i < reg->n_entries; i++)
        if (!reg->entries[i].shadowed && strcmp(reg->entries[i].desc->id, id) == 0)
            return &reg->entries[i];
    return NULL;
}

/* Registers the losses of a plugin as its scan found them; the plugin
 * itself stays out of this process until one of them is used. */
static void register_plugin(lk__registry *reg, const char *path, const char *rec, size_t len)
{
    lk__module *m = calloc(1, sizeof *m);
    lk__module **mods = realloc(reg->modules, (reg->n_modules + 1) * sizeof *mods);
    if (mods)
        reg->modules = mods;
    if (m)
        m->arena = calloc(1, sizeof *m->arena);
    if (!m || !mods || !m->arena || !(m->path = lk__strdup(path)) || !(m->record = malloc(len))) {
        add_diag(reg, "%s: out of memory", path);
        goto fail;
    }
    memcpy(m->record, rec, len);
    m->record_len = len;
    m->plugin = lk__scan_read(rec, len, m->arena);
    if (!m->plugin) {
        add_diag(reg, "%s: refused: the scanner's record of it is malformed", path);
        goto fail;
    }
    size_t n = 0;
    while (m->plugin->losses[n])
        n++;
    lk__entry *grown = realloc(reg->entries, (reg->n_entries + n) * sizeof *grown);
    if (!grown) {
        add_diag(reg, "%s: out of memory", path);
        goto fail;
    }
    reg->entries = grown;
    m->first_entry = reg->n_entries;
    m->n_losses = n;
    for (size_t i = 0; i < n; i++) {
        const lk_loss_desc *d = m->plugin->losses[i];
        lk__entry *e = &reg->entries[reg->n_entries + i];
        memset(e, 0, sizeof *e);
        e->desc = d;
        e->module = m;
        e->params = d->params;
        e->slots = d->slots;
        while (d->params && d->params[e->n_params])
            e->n_params++;
        while (d->slots[e->n_slots])
            e->n_slots++;
        const lk__entry *winner = lk__registry_find(reg, d->id);
        e->shadowed = winner != NULL;
        e->winner = winner ? (size_t)(winner - reg->entries) : reg->n_entries + i;
    }
    reg->n_entries += n;
    reg->modules[reg->n_modules++] = m;
    return;
fail:
    if (m) {
        if (m->arena)
            lk__arena_free(m->arena);
        free(m->arena);
        free(m->record);
        free(m->path);
        free(m);
    }
}

/* A file of the search path: refused at once for what stat() shows, else
 * queued for the scan. */
/* A folder that holds a plugin, or one above it: as unsafe_owner, except
 * that a sticky folder all may write (/tmp) is fine, since there nobody
 * renames or removes what is not theirs. */
static int unsafe_folder(const struct stat *st)
{
    struct stat judged = *st;
    if (judged.st_mode & S_ISVTX)
        judged.st_mode &= ~(mode_t)(S_IWOTH | S_IWGRP);
    return unsafe_owner(&judged);
}

/* Whoever can write a folder on the way to a plugin can put another file
 * under its name. So the file's real path (every symlink resolved) is
 * checked from the file up to /, and the real path is what is loaded: a
 * link swapped after the check changes nothing. Returns NULL and the real
 * path (to free) in *real, or why not. */
static const char *unsafe_real_path(const char *path, char **real, char *why, size_t cap)
{
    *real = realpath(path, NULL);
    if (!*real) {
        snprintf(why, cap, "cannot resolve its real path: %s", strerror(errno));
        return why;
    }
    char *dir = lk__strdup(*real);
    if (!dir) {
        snprintf(why, cap, "out of memory");
        return why;
    }
    struct stat st;
    const char *bad = NULL;
    if (stat(*real, &st) != 0 || !S_ISREG(st.st_mode) || unsafe_owner(&st)) {
        snprintf(why, cap, "refused: its real path %s is not a regular file safe from other users",
                 *real);
        bad = why;
    }
    for (char *slash = strrchr(dir, '/'); !bad && slash; slash = strrchr(dir, '/')) {
        slash[slash == dir] = '\0'; /* "/a/b" -> "/a", "/a" -> "/" */
        if (stat(dir, &st) != 0) {
            snprintf(why, cap, "cannot check folder %s: %s", dir, strerror(errno));
            bad = why;
        } else {
            if (unsafe_folder(&st)) {
                snprintf(why, cap,
                         "refused: folder %s on its real path %s is writable by other users "
                         "(mode %03o)",
                         dir, *real, (unsigned)(st.st_mode & 0777));
                bad = why;
            }
        }
        if (slash == dir)
            break;
    }
    free(dir);
    if (bad) {
        free(*real);
        *real = NULL;
    }
    return bad;
}

/* Whether st is a file already collected (by another path: a folder
 * listed twice, LOSSKIT_PLUGIN_PATH naming the built-in folder, a symbolic
 * link): it is taken once, at its first place on the path, rather than
 * shadowing itself. */
static int already_collected(const lk__registry *reg, const struct stat *st)
{
    for (size_t i = 0; i < reg->n_pending; i++) {
        const lk__scan_item *it = &reg->pending[i];
        if (!it->diag && it->path && it->key[5] == (int64_t)st->st_ino &&
            it->key[6] == (int64_t)st->st_dev)
            return 1;
    }
    return 0;
}

static void load_file(lk__registry *reg, const char *path)
{
    /* stat, not open: it never blocks. dlopen on a FIFO would wait for a
     * writer forever, and on a device would read who knows what. */
    struct stat st;
    int stat_errno = stat(path, &st) == 0 ? 0 : errno;
    if (!stat_errno && S_ISREG(st.st_mode) && already_collected(reg, &st))
        return;
    lk__scan_item *grown = realloc(reg->pending, (reg->n_pending + 1) * sizeof *grown);
    if (!grown) {
        add_diag(reg, "%s: out of memory", path);
        return;
    }
    reg->pending = grown;
    lk__scan_item *it = &reg->pending[reg->n_pending];
    memset(it, 0, sizeof *it);
    if (!(it->path = lk__strdup(path))) {
        add_diag(reg, "%s: out of memory", path);
        return;
    }
    reg->n_pending++;
    char line[512];
    line[0] = '\0';
    if (stat_errno)
        snprintf(line, sizeof line, "%s", strerror(stat_errno));
    else if (!S_ISREG(st.st_mode))
        snprintf(line, sizeof line, "refused: not a regular file (it is %s)",
                 lk__file_kind(st.st_mode));
    else if (unsafe_owner(&st))
        snprintf(line, sizeof line, "refused: writable by other users (mode %03o)",
                 (unsigned)(st.st_mode & 0777));
    else {
        char *real = NULL, why[480];
        if (unsafe_real_path(path, &real, why, sizeof why))
            snprintf(line, sizeof line, "%s", why);
        free(real);
    }
    if (line[0]) {
        size_t n = strlen(path) + strlen(line) + 3;
        if ((it->diag = malloc(n)) != NULL)
            snprintf(it->diag, n, "%s: %s", path, line);
        return;
    }
    lk__scan_key_of(it, &st);
}

/* A diagnostic found while collecting the path: it keeps its place among
 * the files' own. */
static void pending_diag(lk__registry *reg, const char *fmt, ...) LK__PRINTF(2, 3);
static void pending_diag(lk__registry *reg, const char *fmt, ...)
{
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lk__scan_item *grown = realloc(reg->pending, (reg->n_pending + 1) * sizeof *grown);
    if (!grown) {
        add_diag(reg, "%s", line);
        return;
    }
    reg->pending = grown;
    lk__scan_item *it = &reg->pending[reg->n_pending];
    memset(it, 0, sizeof *it);
    if ((it->diag = lk__strdup(line)) != NULL)
        reg->n_pending++;
}

void lk__registry_finish(lk__registry *reg)
{
    lk__scan_item *items = reg->pending;
    size_t n = reg->n_pending;
    reg->pending = NULL;
    reg->n_pending = 0;
    lk__scan_items(items, n);
    for (size_t i = 0; i < n; i++) {
        lk__scan_item *it = &items[i];
        if (it->diag)
            add_diag(reg, "%s", it->diag);
        else if (it->kind == LK__ITEM_OK)
            register_plugin(reg, it->path, it->payload, it->payload_len);
        else
            add_diag(reg, "%s: %s", it->path, it->payload ? it->payload : "out of memory");
        free(it->path);
        free(it->diag);
        free(it->payload);
    }
    free(items);
}

/* The first use of a loss: its plugin enters this process, and must offer
 * exactly what its scan found (the file may have changed since, or the
 * cache may lie). */
static lk_status load_module(lk__registry *reg, lk__module *m, char *why, size_t cap)
{
    char shown[LK__PATH_BUF]; /* the path as messages show it */
    lk__short_path(shown, m->path);
    dlerror();
    void *h = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, cap, "%s: cannot load: %s", shown, e ? e : "unknown dlopen error");
        return LK_ERR_LOAD;
    }
    lk_plugin_entry_fn entry;
    void *sym = dlsym(h, LK_PLUGIN_ENTRY_NAME);
    memcpy(&entry, &sym, sizeof entry);
    const lk_plugin *pl = sym ? entry(LK_ABI_MAJOR, LK_ABI_MINOR) : NULL;
    char problem[512];
    lk__buf rec = {0};
    if (pl && pl->abi_major == LK_ABI_MAJOR && !lk__validate_plugin(pl, problem, sizeof problem))
        lk__scan_write(pl, &rec);
    int same =
        !rec.oom && rec.p && rec.len == m->record_len && memcmp(rec.p, m->record, rec.len) == 0;
    lk__buf_free(&rec);
    if (!same) {
        snprintf(why, cap,
                 "%s: refused at load: it no longer offers what its scan found (the file "
                 "changed since it was scanned, or the plugin answers differently each time); "
                 "run the command again to rescan it",
                 shown);
        dlclose(h);
        lk__scan_forget(m->path); /* whatever the cache said, the next run scans it */
        return LK_ERR_LOAD;
    }
    m->handle = h;
    m->loaded = pl;
    for (size_t i = 0; i < m->n_losses; i++)
        __atomic_store_n(&reg->entries[m->first_entry + i].impl, pl->losses[i], __ATOMIC_RELEASE);
    return LK_OK;
}

lk_status lk__registry_use(lk__registry *reg, const lk__entry *e, char *errmsg)
{
    if (__atomic_load_n(&e->impl, __ATOMIC_ACQUIRE))
        return LK_OK;
    lk__module *m = (lk__module *)e->module;
    pthread_mutex_lock(reg->load_lock);
    if (m->load_state == 0) {
        char why[1024];
        if (load_module(reg, m, why, sizeof why) == LK_OK)
            m->load_state = 1;
        else {
            m->load_state = -1;
            m->load_error = lk__strdup(why);
        }
    }
    lk_status st = m->load_state == 1 ? LK_OK : LK_ERR_LOAD;
    if (st != LK_OK) /* not escaped here: the caller's lk__err does it once */
        snprintf(errmsg, LK_ERRMSG_CAP, "%s", m->load_error ? m->load_error : "out of memory");
    pthread_mutex_unlock(reg->load_lock);
    return st;
}

static int has_so_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_dir(lk__registry *reg, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        pending_diag(reg, "%s: cannot open plugin directory: %s", dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_so_suffix(de->d_name))
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *grown);
        if (!grown)
            break;
        names = grown;
        if ((names[n] = lk__strdup(de->d_name)) != NULL)
            n++;
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        if (path) {
            snprintf(path, len, "%s/%s", dir, names[i]);
            load_file(reg, path);
            free(path);
        }
        free(names[i]);
    }
    free(names);
}

static void load_element(lk__registry *reg, const char *elem)
{
    struct stat st;
    if (stat(elem, &st) != 0) {
        pending_diag(reg, "%s: plugin path element: %s", elem, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        /* A bare name means the file in the current folder, as it was just
         * stat()ed and as its folder is checked below: dlopen() given a name
         * without a slash would search the library path instead. */
        char *file = NULL;
        if (!strchr(elem, '/')) {
            size_t n = strlen(elem) + 3;
            if ((file = malloc(n)) != NULL)
                snprintf(file, n, "./%s", elem);
        } else {
            file = lk__strdup(elem);
        }
        /* Whoever can write the folder can replace the file. */
        char *dir = file ? lk__strdup(file) : NULL;
        char *slash = dir ? strrchr(dir, '/') : NULL;
        struct stat dst;
        if (slash)
            *(slash == dir ? slash + 1 : slash) = '\0';
        if (!dir)
            pending_diag(reg, "%s: out of memory", elem);
        else if (stat(dir, &dst) == 0 && unsafe_folder(&dst))
            pending_diag(reg, "%s: refused: its folder %s is writable by other users (mode %03o)",
                         file, dir, (unsigned)(dst.st_mode & 0777));
        else
            load_file(reg, file);
        free(dir);
        free(file);
        return;
    }
    if (unsafe_owner(&st)) {
        pending_diag(reg, "%s: plugin directory refused: writable by other users (mode %03o)", elem,
                     (unsigned)(st.st_mode & 0777));
        return;
    }
    load_dir(reg, elem);
}

void lk__registry_load(lk__registry *reg, const char *path_list)
{
    if (!path_list)
        return;
    const char *p = path_list;
    while (*p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (len > 0) {
            char *elem = malloc(len + 1);
            if (elem) {
                memcpy(elem, p, len);
                elem[len] = '\0';
                load_element(reg, elem);
                free(elem);
            }
        }
        p += len;
        if (*p == ':')
            p++;
    }
}

void lk__registry_free(lk__registry *reg)
{
    free(reg->entries);
    for (size_t i = 0; i < reg->n_modules; i++) {
        lk__module *m = reg->modules[i];
        if (m->handle)
            dlclose(m->handle);
        lk__arena_free(m->arena);
        free(m->arena);
        free(m->record);
        free(m->load_error);
        free(m->path);
        free(m);
    }
    free(reg->modules);
    for (size_t i = 0; i < reg->n_diags; i++)
        free(reg->diags[i]);
    free(reg->diags);
    for (size_t i = 0; i < reg->n_pending; i++) {
        free(reg->pending[i].path);
        free(reg->pending[i].diag);
        free(reg->pending[i].payload);
    }
    free(reg->pending);
    if (reg->load_lock) {
        pthread_mutex_destroy(reg->load_lock);
        free(reg->load_lock);
    }
    memset(reg, 0, sizeof *reg);
}

void lk__registry_suggest(const lk__registry *reg, const char *id, char *buf, size_t cap)
{
    const char *best = NULL;
    size_t used = 0, n = 0;
    buf[0] = '\0';
    /* all: the length of the known ids as listed */
    size_t all = 0;
    const char **ids = calloc(reg->n_entries ? reg->n_entries : 1, sizeof *ids);
    for (size_t i = 0; ids && i < reg->n_entries; i++)
        if (!reg->entries[i].shadowed) {
            ids[n++] = reg->entries[i].desc->id;
            all += 1 + strlen(reg->entries[i].desc->id);
        }
    if (ids)
        best = lk_closest_name(id, ids, n);
    if (n == 0 && reg->n_entries == 0) {
        free(ids);
        snprintf(buf, cap,
                 "no losses are registered; plugins are searched on LOSSKIT_PLUGIN_PATH, then "
                 "in the built-in folder");
        return;
    }
    if (best)
        used = (size_t)snprintf(buf, cap, "did you mean '%s'? ", best);
    /* the known ids where they are few enough to read in one line (and to
     * fit the message whatever its file name), else their count */
    if (ids && all <= 160) {
        if (used < cap)
            used += (size_t)snprintf(buf + used, cap - used, "known:");
        for (size_t i = 0; i < n && used < cap; i++)
            used += (size_t)snprintf(buf + used, cap - used, " %s", ids[i]);
    } else if (used < cap) {
        used += (size_t)snprintf(buf + used, cap - used,
                                 "%zu losses are known, `losskit list` shows them", n);
    }
    free(ids);
    if (used < cap)
        snprintf(buf + used, cap - used,
                 " (a loss of your own: put its plugin's folder on LOSSKIT_PLUGIN_PATH)");
}

/* The build tree's plugin folders when this library runs from the build
 * tree, else the installed plugin folder. */
const char *lk__default_plugin_path(void)
{
    Dl_info info;
    void *self = (void *)(uintptr_t)&lk__default_plugin_path;
    if (!dladdr(self, &info) || !info.dli_fname)
        return LK_INSTALL_PLUGIN_DIR;
    /* dladdr reports the name the library was loaded by, maybe relative. */
    char *real = realpath(info.dli_fname, NULL);
    int in_build = real && strncmp(real, LK_BUILD_ROOT "/", strlen(LK_BUILD_ROOT) + 1) == 0;
    free(real);
    return in_build ? LK_BUILD_PLUGIN_PATH : LK_INSTALL_PLUGIN_DIR;
}
