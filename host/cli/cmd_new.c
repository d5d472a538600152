/* cmd_new.c: `losskit new NAME [--elementwise] [--dir DIR]`, an out-of-tree
 * plugin project from a template.
 *
 * The templates live in sdk/template (installed to $datadir/losskit/template);
 * @NAME@ in them becomes the plugin's name. The loss source and its config
 * come from plugin.c.in and config.json.in (a two-pass loss) or, with
 * --elementwise, from elementwise.c.in and elementwise.json.in; meson.build
 * and README.md are shared. The project also gets a little sample data, so
 * that `losskit run` works on it straight away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define MAX_TEMPLATE (256 * 1024)

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* The source tree's templates when this binary runs from the build tree,
 * else the installed ones. */
static const char *template_dir(void)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        if (strncmp(self, LK_BUILD_ROOT "/", strlen(LK_BUILD_ROOT) + 1) == 0)
            return LK_SOURCE_ROOT "/sdk/template";
    }
    return LK_INSTALL_TEMPLATE_DIR;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("new: cannot read template %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_TEMPLATE + 1);
    size_t n = buf ? fread(buf, 1, MAX_TEMPLATE, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

static int write_substituted(const char *text, const char *name, const char *path)
{
    FILE *f = fopen(path, "wx");
    if (!f) {
        cli_error("new: cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    for (const char *p = text; *p;) {
        const char *at = strstr(p, "@NAME@");
        size_t len = at ? (size_t)(at - p) : strlen(p);
        fwrite(p, 1, len, f);
        if (!at)
            break;
        fputs(name, f);
        p = at + 6;
    }
    if (fclose(f) != 0) {
        cli_error("new: cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int render(const char *tdir, const char *tname, const char *dir, const char *out,
                  const char *name)
{
    char tpath[4096], opath[4096];
    snprintf(tpath, sizeof tpath, "%s/%s", tdir, tname);
    snprintf(opath, sizeof opath, "%s/%s", dir, out);
    char *text = read_file(tpath);
    if (!text)
        return -1;
    int rc = write_substituted(text, name, opath);
    free(text);
    return rc;
}

/* Sample data: logits and a mask that agrees with them most of the time. The
 * elementwise template reads the same files as raw predictions and targets,
 * which a regression loss takes as readily. */
static int write_data(const char *dir)
{
    enum { N = 2 * 1 * 8 * 8 };
    float x[N], t[N];
    uint32_t s = 12345u;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        double u = (double)(s >> 8) / 16777216.0;
        x[i] = (float)(6.0 * u - 3.0);
        t[i] = (u > 0.5) != ((i % 7) == 0) ? 1.0f : 0.0f;
    }
    const int64_t shape[4] = {2, 1, 8, 8};
    lk_tensor tx = {x, LK_DTYPE_F32, 4, shape, NULL}, tt = {t, LK_DTYPE_F32, 4, shape, NULL};
    char path[4096], err[LK_ERRMSG_CAP];
    snprintf(path, sizeof path, "%s/data/input.npy", dir);
    if (lk_npy_write(path, &tx, err) != LK_OK) {
        cli_error("new: %s", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/data/target.npy", dir);
    if (lk_npy_write(path, &tt, err) != LK_OK) {
        cli_error("new: %s", err);
        return -1;
    }
    return 0;
}

static int make_dirs(const char *dir)
{
    char data[4096];
    if (mkdir(dir, 0755) != 0) {
        cli_error("new: cannot create %s: %s%s", dir, strerror(errno),
                  errno == EEXIST ? " (choose another --dir; nothing is overwritten)" : "");
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", dir);
    if (mkdir(data, 0755) != 0) {
        cli_error("new: cannot create %s: %s", data, strerror(errno));
        return -1;
    }
    return 0;
}

#define NEW_USAGE "new: usage: losskit new NAME [--elementwise] [--dir DIR]"

/* A new loss named like a registered one shadows it where its folder comes
 * first on the plugin path: say so before the user builds on it. */
static void warn_if_taken(const char *name)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.threads = 1;
    lk_runtime *rt = NULL;
    char err[LK_ERRMSG_CAP] = "";
    lk_loss_info info;
    if (lk_runtime_open(&opts, &rt, err) != LK_OK)
        return;
    if (lk_runtime_find(rt, name, &info, NULL) == LK_OK)
        cli_error("new: warning: '%s' is already a loss of plugin %s (%s); yours will shadow it "
                  "wherever its folder comes first on LOSSKIT_PLUGIN_PATH, and `losskit list` "
                  "will show which one serves",
                  name, info.plugin_name, info.plugin_file);
    lk_runtime_close(rt);
}

int cmd_new(int argc, char **argv)
{
    const char *name = NULL, *dir = NULL;
    int elementwise = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--elementwise") == 0)
            elementwise = 1;
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else {
            if (argv[i][0] == '-' && strcmp(argv[i], "--dir") != 0)
                cli_unknown_option("new", argv[i]);
            else
                cli_error(NEW_USAGE);
            return EXIT_USAGE;
        }
    }
    if (!name) {
        cli_error(NEW_USAGE);
        return EXIT_USAGE;
    }
    if (!valid_name(name)) {
        cli_error("new: '%s' is not a valid loss id: a lowercase letter, then [a-z0-9_], at most "
                  "64 characters (it also names C identifiers)",
                  name);
        return EXIT_USAGE;
    }
    warn_if_taken(name);
    if (!dir)
        dir = name;
    if (make_dirs(dir) != 0)
        return EXIT_USAGE;
    const char *tdir = template_dir();
    char src[80], cfg[80];
    snprintf(src, sizeof src, "%s.c", name);
    snprintf(cfg, sizeof cfg, "%s.json", name);
    const char *src_in = elementwise ? "elementwise.c.in" : "plugin.c.in";
    const char *cfg_in = elementwise ? "elementwise.json.in" : "config.json.in";
    if (render(tdir, src_in, dir, src, name) ||
        render(tdir, "meson.build.in", dir, "meson.build", name) ||
        render(tdir, cfg_in, dir, cfg, name) ||
        render(tdir, "README.md.in", dir, "README.md", name) || write_data(dir))
        return EXIT_FAILURE_INTERNAL;
    printf("wrote %s/: meson.build %s %s README.md data/input.npy data/target.npy\n", dir, src,
           cfg);
    printf("next:\n  cd %s && meson setup build && meson compile -C build\n"
           "  losskit check build/%s.so --pairs\n"
           "  LOSSKIT_PLUGIN_PATH=$PWD/build losskit run %s --input data/input.npy "
           "--target data/target.npy\n",
           dir, name, cfg);
    return EXIT_OK;
}
