/* registry.c: finds, loads and validates loss plugins.
 *
 * The search path is a colon-separated list of directories and .so files,
 * read in order; within a directory, files are taken in name order so that
 * the result never depends on the file system's listing order. A loss id
 * met a second time is kept but marked shadowed: the first one serves. A
 * plugin that fails any check is refused whole, with one diagnostic line
 * "FILE: problem", and loading goes on with the next file. */
#define _GNU_SOURCE /* dladdr */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#include <math.h>

#define MAX_ID_LEN LK_MAX_ID_LEN

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

static int valid_name(const char *s)
{
    if (!s || !*s || strnlen(s, MAX_ID_LEN + 1) > MAX_ID_LEN)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* Why a name is not valid, or NULL. what is "id" or "name". */
static const char *name_problem(const char *s, const char *what, char *buf, size_t cap)
{
    if (valid_name(s))
        return NULL;
    size_t n = s ? strlen(s) : 0;
    if (n > MAX_ID_LEN)
        snprintf(buf, cap, "its %s has %zu characters; at most %d are allowed", what, n,
                 MAX_ID_LEN);
    else
        snprintf(buf, cap, "its %s is not [a-z0-9_]+ (at most %d characters)", what, MAX_ID_LEN);
    return buf;
}

/* A name as messages quote it: one longer than the limit is cut, and says
 * how long it is, so that the reason after it is never lost. */
static const char *shown_name(const char *s, char *buf, size_t cap)
{
    if (!s)
        return "(null)";
    size_t n = strlen(s);
    if (n <= MAX_ID_LEN)
        return s;
    snprintf(buf, cap, "%.*s... (%zu characters)", MAX_ID_LEN, s, n);
    return buf;
}

static int in_bounds(const lk_param_desc *p, double v)
{
    if (v < p->min || v > p->max)
        return 0;
    if ((p->flags & LK_PARAM_MIN_EXCLUSIVE) && v == p->min)
        return 0;
    if ((p->flags & LK_PARAM_MAX_EXCLUSIVE) && v == p->max)
        return 0;
    return 1;
}

/* Checks one parameter declaration; returns a problem or NULL. */
static const char *check_param(const lk_param_desc *p, char *buf, size_t cap)
{
    const char *bad = name_problem(p->name, "name", buf, cap);
    if (bad)
        return bad;
    if (!p->doc)
        return "it has no doc";
    if (p->min != p->min || p->max != p->max)
        return "its min or max is NaN";
    if (p->min > p->max)
        return "its min exceeds its max";
    switch (p->type) {
    case LK_PARAM_NUMBER:
    case LK_PARAM_INTEGER:
        /* the checker's rule, now the loader's: a config that says nothing
         * must get a value a config could have given */
        if (!isfinite(p->default_number))
            return "its default is not a finite number (NaN or infinite)";
        if (!in_bounds(p, p->default_number))
            return "its default is outside its range";
        if (p->type == LK_PARAM_INTEGER && p->default_number != floor(p->default_number))
            return "it is an integer with a fractional default";
        if (p->type == LK_PARAM_INTEGER && !(p->default_number >= -9223372036854775808.0 &&
                                             p->default_number < 9223372036854775808.0))
            return "it is an integer whose default is outside the 64-bit range";
        return NULL;
    case LK_PARAM_BOOL:
        return p->default_number == 0 || p->default_number == 1
                   ? NULL
                   : "it is a boolean whose default is not 0 or 1";
    case LK_PARAM_CHOICE:
        if (!p->choices || !p->choices[0] || !p->default_choice)
            return "it is a choice without choices or default";
        for (const char *const *c = p->choices; *c; c++)
            if (strcmp(*c, p->default_choice) == 0)
                return NULL;
        return "its default is not among its choices";
    case LK_PARAM_NUMBER_LIST:
        if (p->default_list_len < 0 || (p->default_list_len > 0 && !p->default_list))
            return "its default list is malformed";
        if (p->list_min_len < 0 || (p->list_max_len >= 0 && p->list_max_len < p->list_min_len))
            return "its list length bounds are malformed";
        for (int32_t i = 0; i < p->default_list_len; i++) {
            if (!isfinite(p->default_list[i]))
                return "its default list has an item that is not a finite number";
            if (!in_bounds(p, p->default_list[i]))
                return "its default list has items outside its range";
        }
        return NULL;
    default: return "its type is unknown";
    }
}

static const char *check_slot(const lk_slot_desc *s, uint32_t index, uint32_t minor, char *buf,
                              size_t cap)
{
    const uint32_t known = LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64) |
                           LK_DTYPE_BIT(LK_DTYPE_I64) | LK_DTYPE_BIT(LK_DTYPE_I32) |
                           LK_DTYPE_BIT(LK_DTYPE_U8) | LK_DTYPE_BIT(LK_DTYPE_BOOL);
    const char *bad = name_problem(s->name, "name", buf, cap);
    if (bad)
        return bad;
    if (!s->dtypes || (s->dtypes & ~known))
        return "it accepts no dtype or an unknown one";
    if (s->shape < LK_SHAPE_ANY || s->shape > LK_SHAPE_INPUT_NO_CHANNEL)
        return "its shape rule is unknown";
    if (index == 0 && s->shape == LK_SHAPE_INPUT_NO_CHANNEL)
        return "slot 0 cannot have a shape rule relative to itself";
    if (index == 0 && (s->flags & LK_SLOT_OPTIONAL))
        return "slot 0 cannot be optional";
    if ((s->flags & LK_SLOT_DIFFERENTIABLE) && (s->dtypes & ~LK_DTYPES_FLOAT))
        return "it is differentiable but accepts non-float dtypes";
    if (minor >= 1 && (s->values < LK_VALUES_DEFAULT || s->values > LK_VALUES_LAST))
        return "its values kind is unknown";
    return NULL;
}

/* Checks a loss descriptor and collects its params and slots. Returns a
 * problem or NULL; on success e is filled in. */
static const char *named(char *buf, size_t cap, const char *what, const char *name,
                         const char *problem)
{
    char shown[MAX_ID_LEN + 48];
    snprintf(buf, cap, "%s '%s': %s", what, shown_name(name, shown, sizeof shown), problem);
    return buf;
}

static const char *check_loss(const lk_loss_desc *d, uint32_t minor, lk__entry *e)
{
    static _Thread_local char why[256];
    char problem[128];
    const char *bad = name_problem(d->id, "id", why, sizeof why);
    if (bad)
        return bad;
    if (!d->summary || !d->version)
        return "it has no summary or no version";
    /* Counting stops past the limit: a descriptor that claims 100,000
     * parameters costs no more than one that claims 257, and the limit
     * keeps the pairwise name check below (quadratic) at 256 x 255 / 2. */
    uint32_t np = 0, ns = 0;
    while (d->params && d->params[np] && np <= LK_MAX_PARAMS)
        np++;
    while (d->slots && d->slots[ns] && ns <= LK__MAX_SLOTS)
        ns++;
    if (ns == 0)
        return "it declares no tensor slots";
    if (ns > LK__MAX_SLOTS)
        return "it declares more than 16 tensor slots";
    if (np > LK_MAX_PARAMS) {
        snprintf(why, sizeof why, "it declares more than %d parameters (LK_MAX_PARAMS)",
                 LK_MAX_PARAMS);
        return why;
    }
    const uint32_t known_red = (1u << LK_REDUCTION_COUNT) - 1;
    if (!d->reductions || (d->reductions & ~known_red) || d->default_reduction < 0 ||
        d->default_reduction >= LK_REDUCTION_COUNT ||
        !(d->reductions & LK_REDUCTION_BIT(d->default_reduction)))
        return "its reductions are malformed (none, unknown, or a default it does not offer)";
    if (d->flags & ~(LK_LOSS_FUSED | LK_LOSS_WHOLE | LK_LOSS_UNBOUNDED))
        return "it sets unknown loss flags";
    int has_diff = 0;
    for (uint32_t i = 0; i < ns; i++) {
        const char *p = check_slot(d->slots[i], i, minor, problem, sizeof problem);
        if (p)
            return named(why, sizeof why, "slot", d->slots[i]->name, p);
        has_diff |= (d->slots[i]->flags & LK_SLOT_DIFFERENTIABLE) != 0;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(d->slots[i]->name, d->slots[j]->name) == 0)
                return "two of its slots have the same name";
    }
    for (uint32_t i = 0; i < np; i++) {
        const char *p = check_param(d->params[i], problem, sizeof problem);
        if (p)
            return named(why, sizeof why, "parameter", d->params[i]->name, p);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(d->params[i]->name, d->params[j]->name) == 0)
                return "two of its parameters have the same name";
    }
    if ((d->create == NULL) != (d->destroy == NULL))
        return "it sets only one of create and destroy";
    if (d->flags & LK_LOSS_WHOLE) {
        if (!d->whole)
            return "the required function whole is NULL (LK_LOSS_WHOLE is set)";
    } else {
        if (!d->forward)
            return "the required function forward is NULL";
        if (has_diff && !(d->flags & LK_LOSS_FUSED) && !d->backward)
            return "the required function backward is NULL (required unless LK_LOSS_FUSED)";
    }
    e->desc = d;
    e->n_params = np;
    e->n_slots = ns;
    e->params = calloc(np ? np : 1, sizeof *e->params);
    e->slots = calloc(ns, sizeof *e->slots);
    if (!e->params || !e->slots) {
        snprintf(why, sizeof why, "out of memory");
        return why;
    }
    if (np)
        memcpy(e->params, d->params, np * sizeof *e->params);
    memcpy(e->slots, d->slots, ns * sizeof *e->slots);
    return NULL;
}

static void free_entry(lk__entry *e)
{
    free(e->params);
    free(e->slots);
}

const lk__entry *lk__registry_find(const lk__registry *reg, const char *id)
{
    for (size_t i = 0; i < reg->n_entries; i++)
        if (!reg->entries[i].shadowed && strcmp(reg->entries[i].desc->id, id) == 0)
            return &reg->entries[i];
    return NULL;
}

/* Validates every loss of a loaded plugin, then registers them all or none. */
static int register_plugin(lk__registry *reg, lk__module *m)
{
    const lk_plugin *pl = m->plugin;
    size_t n = 0;
    while (pl->losses && pl->losses[n])
        n++;
    if (!pl->name || !pl->version) {
        add_diag(reg, "%s: plugin descriptor lacks a name or version", m->path);
        return 0;
    }
    if (n == 0) {
        add_diag(reg, "%s: plugin '%s' declares no losses", m->path, pl->name);
        return 0;
    }
    lk__entry *grown = realloc(reg->entries, (reg->n_entries + n) * sizeof *grown);
    if (!grown) {
        add_diag(reg, "%s: out of memory", m->path);
        return 0;
    }
    reg->entries = grown;
    lk__entry *fresh = reg->entries + reg->n_entries;
    memset(fresh, 0, n * sizeof *fresh);
    for (size_t i = 0; i < n; i++) {
        const char *problem = check_loss(pl->losses[i], pl->abi_minor, &fresh[i]);
        char shown[MAX_ID_LEN + 48];
        const char *id = shown_name(pl->losses[i]->id, shown, sizeof shown);
        for (size_t j = 0; !problem && j < i; j++)
            if (strcmp(fresh[j].desc->id, pl->losses[i]->id) == 0)
                problem = "the plugin declares this loss id twice";
        if (problem) {
            add_diag(reg, "%s: loss '%s': %s; plugin refused", m->path, id, problem);
            for (size_t j = 0; j <= i; j++)
                free_entry(&fresh[j]);
            return 0;
        }
        fresh[i].module = m;
    }
    for (size_t i = 0; i < n; i++) {
        const lk__entry *winner = lk__registry_find(reg, fresh[i].desc->id);
        if (winner) {
            fresh[i].shadowed = 1;
            fresh[i].winner = (size_t)(winner - reg->entries);
        } else {
            fresh[i].winner = reg->n_entries + i;
        }
    }
    reg->n_entries += n;
    return 1;
}

int lk__registry_check_plugin(lk__registry *reg, const lk_plugin *pl)
{
    static char path[] = "(descriptor)";
    lk__module m = {path, NULL, pl};
    int ok = register_plugin(reg, &m);
    for (size_t i = 0; i < reg->n_entries; i++)
        if (reg->entries[i].module == &m)
            reg->entries[i].module = NULL; /* m is gone on return */
    return ok;
}

static void load_file(lk__registry *reg, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        add_diag(reg, "%s: %s", path, strerror(errno));
        return;
    }
    /* stat, not open: it never blocks. dlopen on a FIFO would wait for a
     * writer forever, and on a device would read who knows what. */
    if (!S_ISREG(st.st_mode)) {
        add_diag(reg, "%s: refused: not a regular file (it is %s)", path,
                 lk__file_kind(st.st_mode));
        return;
    }
    if (unsafe_owner(&st)) {
        add_diag(reg, "%s: refused: writable by other users (mode %03o)", path,
                 (unsigned)(st.st_mode & 0777));
        return;
    }
    char *real, refused[PATH_MAX + 160];
    if (unsafe_real_path(path, &real, refused, sizeof refused)) {
        add_diag(reg, "%s: %s", path, refused);
        return;
    }
    dlerror();
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    free(real);
    if (!h) {
        const char *why = dlerror();
        add_diag(reg, "%s: cannot load: %s", path, why ? why : "unknown dlopen error");
        return;
    }
    lk_plugin_entry_fn entry;
    void *sym = dlsym(h, LK_PLUGIN_ENTRY_NAME);
    memcpy(&entry, &sym, sizeof entry);
    if (!sym) {
        add_diag(reg, "%s: no '%s' symbol: not a losskit plugin", path, LK_PLUGIN_ENTRY_NAME);
        dlclose(h);
        return;
    }
    const lk_plugin *pl = entry(LK_ABI_MAJOR, LK_ABI_MINOR);
    if (!pl) {
        add_diag(reg, "%s: %s returned NULL: the plugin refused host ABI %d.%d", path,
                 LK_PLUGIN_ENTRY_NAME, LK_ABI_MAJOR, LK_ABI_MINOR);
        dlclose(h);
        return;
    }
    if (pl->abi_major != LK_ABI_MAJOR) {
        add_diag(reg,
                 "%s: built for losskit ABI %u.%u, this host implements ABI %d.%d "
                 "(the major versions must match)",
                 path, pl->abi_major, pl->abi_minor, LK_ABI_MAJOR, LK_ABI_MINOR);
        dlclose(h);
        return;
    }
    lk__module *m = calloc(1, sizeof *m);
    lk__module **mods = realloc(reg->modules, (reg->n_modules + 1) * sizeof *mods);
    if (mods)
        reg->modules = mods;
    if (!m || !mods || !(m->path = lk__strdup(path))) {
        add_diag(reg, "%s: out of memory", path);
        free(m);
        dlclose(h);
        return;
    }
    m->handle = h;
    m->plugin = pl;
    if (!register_plugin(reg, m)) {
        free(m->path);
        free(m);
        dlclose(h);
        return;
    }
    reg->modules[reg->n_modules++] = m;
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
        add_diag(reg, "%s: cannot open plugin directory: %s", dir, strerror(errno));
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
        add_diag(reg, "%s: plugin path element: %s", elem, strerror(errno));
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
            add_diag(reg, "%s: out of memory", elem);
        else if (stat(dir, &dst) == 0 && unsafe_folder(&dst))
            add_diag(reg, "%s: refused: its folder %s is writable by other users (mode %03o)", file,
                     dir, (unsigned)(dst.st_mode & 0777));
        else
            load_file(reg, file);
        free(dir);
        free(file);
        return;
    }
    if (unsafe_owner(&st)) {
        add_diag(reg, "%s: plugin directory refused: writable by other users (mode %03o)", elem,
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
    for (size_t i = 0; i < reg->n_entries; i++)
        free_entry(&reg->entries[i]);
    free(reg->entries);
    for (size_t i = 0; i < reg->n_modules; i++) {
        dlclose(reg->modules[i]->handle);
        free(reg->modules[i]->path);
        free(reg->modules[i]);
    }
    free(reg->modules);
    for (size_t i = 0; i < reg->n_diags; i++)
        free(reg->diags[i]);
    free(reg->diags);
    memset(reg, 0, sizeof *reg);
}

void lk__registry_suggest(const lk__registry *reg, const char *id, char *buf, size_t cap)
{
    const char *best = NULL;
    size_t used = 0, n = 0;
    buf[0] = '\0';
    const char **ids = calloc(reg->n_entries ? reg->n_entries : 1, sizeof *ids);
    for (size_t i = 0; ids && i < reg->n_entries; i++)
        if (!reg->entries[i].shadowed)
            ids[n++] = reg->entries[i].desc->id;
    if (ids)
        best = lk_closest_name(id, ids, n);
    free(ids);
    if (n == 0 && reg->n_entries == 0) {
        snprintf(buf, cap,
                 "no losses are registered; plugins are searched on LOSSKIT_PLUGIN_PATH, then "
                 "in the built-in folder");
        return;
    }
    if (best)
        used = (size_t)snprintf(buf, cap, "did you mean '%s'? ", best);
    if (used < cap)
        used += (size_t)snprintf(buf + used, cap - used,
                                 "(a loss of your own: put its plugin's folder on "
                                 "LOSSKIT_PLUGIN_PATH) known:");
    for (size_t i = 0; i < reg->n_entries && used < cap; i++)
        if (!reg->entries[i].shadowed)
            used += (size_t)snprintf(buf + used, cap - used, " %s", reg->entries[i].desc->id);
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
