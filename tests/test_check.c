/* test_check: `losskit check`, the conformance report for plugin authors.
 *
 * It runs the real command on plugins that are wrong on purpose
 * (tests/fixtures/check, each wrong in exactly one way) and on the tutorial
 * family, and pins what an author relies on: a correct plugin passes with
 * exit 0; each kind of bug fails the check made for it, with exit 1 and the
 * numbers that show it; a crashing loss is reported with its signal and the
 * next loss of the plugin is still checked; --json says the same as the text;
 * --loss, usage errors and refused plugins give the documented exit codes. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define CHECK_DIR LK_BUILD_ROOT "/tests/fixtures/check"
#define CF(name)  CHECK_DIR "/cf_" name ".so"
#define TUTORIAL  LK_BUILD_ROOT "/plugins/tutorial.so"

#define OUT_CAP (1 << 18)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Runs `losskit check ARGS` and returns its exit status (-1 if it did not
 * exit); out receives stdout, and stderr too when with_stderr. */
static int run_check(const char *args, int with_stderr, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' check %s%s", LK_CLI_PATH, args, with_stderr ? " 2>&1" : "");
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen(%s) failed", cmd);
    size_t len = fread(out, 1, cap - 1, p);
    out[len] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The summary line "N passed, M failed", which must stand on its own line. */
static void summary(const char *out, int *passed, int *failed)
{
    const char *line = out;
    while (line && *line) {
        int n = 0;
        if (sscanf(line, "%d passed, %d failed%n", passed, failed, &n) == 2 &&
            (line[n] == '\n' || line[n] == '\0'))
            return;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    cr_assert_fail("no summary line \"N passed, M failed\" in:\n%s", out);
}

/* The line that starts with prefix, or NULL. */
static const char *line_starting(const char *out, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *line = out; line && *line;) {
        if (strncmp(line, prefix, n) == 0)
            return line;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return NULL;
}

static void expect_line(const char *out, const char *prefix)
{
    cr_expect_not_null(line_starting(out, prefix), "no line starting \"%s\" in:\n%s", prefix, out);
}

/* The "max rel err X" of a grad line. */
static double max_rel_err(const char *line)
{
    const char *p = strstr(line, "max rel err ");
    cr_assert_not_null(p, "no \"max rel err\" in: %.300s", line);
    return strtod(p + strlen("max rel err "), NULL);
}

/* A plugin that must pass: exit 0, "0 failed", no FAIL line, and each check
 * kind present for each loss named. */
static void expect_all_pass(const char *plugin, const char *const *losses, size_t n_losses)
{
    static char out[OUT_CAP];
    int rc = run_check(plugin, 0, out, sizeof out);
    int passed, failed;
    summary(out, &passed, &failed);
    cr_expect_eq(rc, 0, "exit %d for %s:\n%s", rc, plugin, out);
    cr_expect_eq(failed, 0, "%d checks failed for %s:\n%s", failed, plugin, out);
    cr_expect_null(line_starting(out, "FAIL "), "a FAIL line for %s:\n%s", plugin, out);
    expect_line(out, "PASS abi ");
    static const char *const kinds[] = {"schema", "finite", "grad",  "reduce",  "threads", "paths",
                                        "split",  "gather", "empty", "extreme", "inputs"};
    for (size_t i = 0; i < n_losses; i++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "PASS %s %s ", kinds[k], losses[i]);
            expect_line(out, prefix);
        }
}

/* A plugin with one deliberate bug: exit 1, `n` failures (the check made
 * for it, and for a gradient wrong everywhere the paths check's
 * differences too), and the FAIL line that names the check made for it.
 * Returns that line. */
static const char *expect_failures(const char *plugin, const char *fail_prefix, int n, char *out,
                                   size_t cap)
{
    int rc = run_check(plugin, 0, out, cap);
    int passed, failed;
    summary(out, &passed, &failed);
    cr_expect_eq(rc, 1, "exit %d for %s:\n%s", rc, plugin, out);
    cr_expect_eq(failed, n, "%d failures for %s, expected %d, %s:\n%s", failed, plugin, n,
                 fail_prefix, out);
    cr_expect_gt(passed, 5, "only %d checks passed for %s:\n%s", passed, plugin, out);
    const char *line = line_starting(out, fail_prefix);
    cr_assert_not_null(line, "no line starting \"%s\" in:\n%s", fail_prefix, out);
    return line;
}

static const char *expect_one_failure(const char *plugin, const char *fail_prefix, char *out,
                                      size_t cap)
{
    return expect_failures(plugin, fail_prefix, 1, out, cap);
}

/* ------------------------------------------------------------------------ */
/* Correct plugins pass                                                      */

Test(check, correct_fixture_passes_every_check)
{
    static const char *const losses[] = {"cf_logistic", "cf_xent"};
    expect_all_pass(CF("good"), losses, 2);
    /* cf_logistic declares a weight slot: its linearity is checked */
    static char out[OUT_CAP];
    run_check(CF("good"), 0, out, sizeof out);
    expect_line(out, "PASS weight cf_logistic ");
}

Test(check, tutorial_passes_every_check)
{
    static const char *const losses[] = {"mse",   "l1", "bce_with_logits", "dice_bce",
                                         "focal", "focal_mean_bce"};
    expect_all_pass(TUTORIAL, losses, sizeof losses / sizeof losses[0]);
}

Test(check, segmentation_passes_every_check)
{
    static const char *const losses[] = {"dice",          "iou",           "jaccard", "tversky",
                                         "focal_tversky", "generalized_dice", "mcc"};
    expect_all_pass(LK_BUILD_ROOT "/plugins/segmentation.so", losses,
                    sizeof losses / sizeof losses[0]);
}

Test(check, example_hook_drives_the_checks)
{
    /* cf_prefix's lengths slot cannot be drawn from the slot rules: its
     * examples (ABI 1.1) are the probe shapes, k = -1 the threads case */
    static const char *const losses[] = {"cf_prefix"};
    expect_all_pass(CF("example"), losses, 1);
    static char out[OUT_CAP];
    run_check(CF("example"), 0, out, sizeof out);
    expect_line(out, "PASS finite cf_prefix 18 evaluations (float32, float64; 3 examples;");
    expect_line(out, "PASS grad cf_prefix float64 example ");
    expect_line(out, "PASS threads cf_prefix shape (40000,3),");
    expect_line(out, "PASS empty cf_prefix not checked: example-driven");
}

Test(check, reports_are_deterministic)
{
    static char a[OUT_CAP], b[OUT_CAP];
    run_check(CF("good"), 0, a, sizeof a);
    run_check(CF("good"), 0, b, sizeof b);
    cr_expect_str_eq(a, b, "two runs differ");
}

/* ------------------------------------------------------------------------ */
/* Each bug fails the check made for it                                      */

Test(check, gradient_sign_error_fails_grad)
{
    static char out[OUT_CAP];
    const char *line = expect_failures(CF("sign"), "FAIL grad cf_sign ", 2, out, sizeof out);
    cr_expect_not_null(line_starting(out, "FAIL paths cf_sign "), "%s", out);
    double e = max_rel_err(line);
    /* analytic -g against numeric g */
    cr_expect(e > 1.5 && e < 2.5, "max rel err %g, expected about 2: %.300s", e, line);
    cr_expect_not_null(strstr(line, "at element "), "the element is not named: %.300s", line);
}

/* The line that starts at l, without its newline, into one (cap bytes). */
static void line_copy(const char *l, char *one, size_t cap)
{
    size_t n = strcspn(l, "\n");
    snprintf(one, cap, "%.*s", (int)(n < cap ? n : cap - 1), l);
}

/* Whether some line of out starting with prefix holds every one of the
 * strings of want (NULL-terminated). */
static int some_line_holds(const char *out, const char *prefix, const char *const *want)
{
    for (const char *l = line_starting(out, prefix); l; l = line_starting(l + 1, prefix)) {
        char one[600];
        line_copy(l, one, sizeof one);
        int all = 1;
        for (const char *const *w = want; *w; w++)
            all &= strstr(one, *w) != NULL;
        if (all)
            return 1;
    }
    return 0;
}

Test(check, choice_and_boolean_parameters_are_varied)
{
    /* cf_choice is wrong under variant=halved only: the checker reaches
     * that setting as it reaches a number parameter's, and passes the
     * boolean's (double_loss=true, right) */
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("choice"), "FAIL grad cf_choice ", out, sizeof out);
    cr_expect_not_null(strstr(line, " variant=halved "), "not the halved setting: %.300s", line);
    double e = max_rel_err(line);
    cr_expect(e > 0.45 && e < 0.55, "max rel err %g, expected 0.5: %.300s", e, line);
    static const char *const doubled[] = {" double_loss=true ", "max rel err ", NULL};
    cr_expect(some_line_holds(out, "PASS grad cf_choice ", doubled),
              "no passing grad line of double_loss=true in:\n%s", out);
    expect_line(out,
                "PASS finite cf_choice 252 evaluations (float32, float64; 7 shapes; 3 settings;");
}

Test(check, list_and_integer_parameters_are_varied)
{
    /* cross_entropy's class weights (a list) and ignore_index (an integer)
     * are moved as numbers are, and their gradients compared on the probe
     * shapes that take them */
    static char out[OUT_CAP];
    int rc = run_check(LK_BUILD_ROOT "/plugins/torch.so", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    static const char *const weighted[] = {" weight=[2, 1, 0] ", "max rel err ", NULL};
    static const char *const ignoring[] = {" ignore_index=0 ", "max rel err ", NULL};
    cr_expect(some_line_holds(out, "PASS grad cross_entropy ", weighted),
              "no compared grad line of weight=[2, 1, 0] in:\n%s", out);
    cr_expect(some_line_holds(out, "PASS grad cross_entropy ", ignoring),
              "no compared grad line of ignore_index=0 in:\n%s", out);
}

Test(check, settings_another_choice_makes_room_for_are_joined_to_it)
{
    /* focal refuses ignore_index outside mode multiclass (at creation), and
     * dice's class list names classes its binary mode lacks (in plan): each
     * is checked joined to the choice that takes it */
    static char out[OUT_CAP];
    int rc = run_check(LK_BUILD_ROOT "/plugins/tutorial.so --loss focal", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    static const char *const focal[] = {" mode=multiclass ", " ignore_index=0 ", "max rel err ",
                                        NULL};
    cr_expect(some_line_holds(out, "PASS grad focal ", focal),
              "no compared grad line of mode=multiclass ignore_index=0 in:\n%s", out);
    rc = run_check(LK_BUILD_ROOT "/plugins/segmentation.so --loss dice", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    static const char *const dice[] = {" mode=multiclass ", " classes=[2, 1, 0] ", "max rel err ",
                                       NULL};
    cr_expect(some_line_holds(out, "PASS grad dice ", dice),
              "no compared grad line of mode=multiclass classes=[2, 1, 0] in:\n%s", out);
}

Test(check, every_list_length_is_compared)
{
    /* class weights of three values on a loss that weighs the last
     * dimension, and of one value where the classes must number as many:
     * the probe shapes (5, 3) and (3, 1) take them, so that no setting is
     * left unchecked */
    static const struct {
        const char *plugin, *prefix, *const want[4];
    } cases[] = {
        {"/plugins/classification.so --loss multilabel_soft_margin",
         "PASS grad multilabel_soft_margin float64 shape (5,3) ",
         {" weight=[2, 1, 0] ", "max rel err ", NULL}},
        {"/plugins/margin.so --loss multi_margin", "PASS grad multi_margin float64 shape (5,3) ",
         {" weight=[2, 1, 0] ", "max rel err ", NULL}},
        {"/plugins/margin.so --loss multi_margin", "PASS grad multi_margin float64 shape (3,1) ",
         {" weight=[2] ", "max rel err ", NULL}},
        {"/plugins/tutorial.so --loss bce_with_logits",
         "PASS grad bce_with_logits float64 shape (5,3) ",
         {" pos_weight=[2, 1, 0] ", "max rel err ", NULL}},
    };
    static char out[OUT_CAP];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[256];
        snprintf(args, sizeof args, "%s%s", LK_BUILD_ROOT, cases[i].plugin);
        int rc = run_check(args, 0, out, sizeof out);
        cr_expect_eq(rc, 0, "%s: exit %d:\n%s", cases[i].plugin, rc, out);
        cr_expect(some_line_holds(out, cases[i].prefix, cases[i].want),
                  "%s: no line \"%s... %s\" in:\n%s", cases[i].plugin, cases[i].prefix,
                  cases[i].want[0], out);
        cr_expect_null(strstr(out, "refused in every case"), "%s: a setting left unchecked:\n%s",
                       cases[i].plugin, out);
    }
}

Test(check, pairs_of_moved_parameters_are_compared_with_pairs)
{
    /* cf_pair is wrong only with gain moved and squared=true together:
     * every single setting passes, and --pairs fails that pair alone */
    static char out[OUT_CAP];
    int rc = run_check(CF("pair"), 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d without --pairs:\n%s", rc, out);
    cr_expect_null(line_starting(out, "PASS pairs "), "pairs checked without --pairs:\n%s", out);
    const char *line =
        expect_one_failure(CF("pair") " --pairs", "FAIL pairs cf_pair ", out, sizeof out);
    cr_expect_not_null(strstr(line, " gain=0.5 squared=true "), "not the pair: %.300s", line);
    double e = max_rel_err(line);
    cr_expect(e > 0.45 && e < 0.55, "max rel err %g, expected 0.5: %.300s", e, line);
    /* a loss of many parameters: every two of them, none failing */
    rc = run_check(LK_BUILD_ROOT "/plugins/segmentation.so --loss dice --pairs", 0, out,
                   sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    line = line_starting(out, "PASS pairs dice ");
    cr_assert_not_null(line, "no pairs line for dice in:\n%s", out);
    long n = strtol(line + strlen("PASS pairs dice "), NULL, 10);
    cr_expect_gt(n, 100, "only %ld pairs of dice's settings: %.300s", n, line);
    cr_expect_not_null(strstr(line, "max rel err "), "no pair compared: %.300s", line);
}

Test(check, float32_path_off_fails_float32)
{
    /* cf_f32's float32 path scales the gradient by 1.001: right in float64,
     * finite everywhere; only the comparison of float32 with float64 on
     * the same numbers sees it */
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("f32"), "FAIL float32 cf_f32 ", out, sizeof out);
    cr_expect_not_null(strstr(line, "gradient of 'input'"), "not the gradient: %.300s", line);
    const char *p = strstr(line, "rel err ");
    cr_assert_not_null(p, "no rel err in: %.300s", line);
    double e = strtod(p + strlen("rel err "), NULL);
    cr_expect(e > 0.9e-3 && e < 1.1e-3, "rel err %g, expected 1e-3: %.300s", e, line);
    /* a loss whose float lanes are its own code passes, with its numbers */
    int rc = run_check(LK_BUILD_ROOT "/plugins/classification.so --loss asymmetric", 0, out,
                       sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    line = line_starting(out, "PASS float32 asymmetric ");
    cr_assert_not_null(line, "no float32 line for asymmetric in:\n%s", out);
    cr_expect_not_null(strstr(line, "; largest "), "no largest error: %.300s", line);
}

/* A gradient right on one block and misplaced past it: only the paths
 * check, which runs several blocks, can see it. */
Test(check, block_relative_gradient_fails_paths)
{
    static char out[OUT_CAP];
    int rc = run_check(CF("blockrel"), 0, out, sizeof out);
    int passed, failed;
    summary(out, &passed, &failed);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    const char *line = line_starting(out, "FAIL paths cf_blockrel ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "gradient of 'input' at element "), "%.300s", line);
    /* the blocks' threads race for the same elements, so the threads check
     * may see it too, or not: no other check does */
    const char *threads = line_starting(out, "FAIL threads cf_blockrel ");
    cr_expect_eq(failed, threads ? 2 : 1, "%s", out);
}

/* Split evaluation (one batch cut into shards, their statistics summed):
 * a loss whose partials are right passes, one without partials refuses
 * the split (passes, with the refusal shown), and one whose partials
 * miscount the samples fails, with the value it gave. */
Test(check, split_through_partials)
{
    static char out[OUT_CAP];
    run_check(LK_BUILD_ROOT "/tests/fixtures/split/fx_sample_square.so", 0, out, sizeof out);
    const char *line = line_starting(out, "PASS split fx_sample_square ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "2 settings and reductions: the statistics of the shards"),
                       "%.300s", line);
    line = line_starting(out, "PASS split fx_sample_square_unsplit ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "every case (2) is refused"), "%.300s", line);
    cr_expect_not_null(strstr(line, "has no partials()"), "%.300s", line);
    line = line_starting(out, "FAIL split fx_sample_square_miscount ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "shard 0's value"), "%.300s", line);
}

/* A whole-batch loss's declared batch layout (ABI 1.6): reordering the
 * samples along it must not change the value, and a padded slot's zeros
 * must not either. cf_gather's two losses are right in every other way. */
Test(check, gather_of_a_whole_batch_loss)
{
    static char out[OUT_CAP];
    int rc = run_check(CF("gather"), 0, out, sizeof out);
    int passed, failed;
    summary(out, &passed, &failed);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    cr_expect_eq(failed, 2, "%s", out);
    const char *line = line_starting(out, "FAIL gather cf_gather_rows ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "with the samples reordered along the declared batch dims"),
                       "%.300s", line);
    line = line_starting(out, "FAIL gather cf_gather_padmean ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "with the padded slots one zero longer"), "%.300s", line);
    /* the built-in whole-batch losses pass, ctc's padding included */
    run_check(LK_BUILD_ROOT "/plugins/sequence.so", 0, out, sizeof out);
    line = line_starting(out, "PASS gather ctc ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "the padded slots with a zero more in each other dim give "
                                    "the same value and a zero gradient there"),
                       "%.300s", line);
    /* an ABI 1.5 whole-batch loss declares nothing: listed, not failed */
    rc = run_check(LK_BUILD_ROOT "/tests/fixtures/split/fx_whole_old.so", 0, out, sizeof out);
    line = line_starting(out, "PASS gather fx_whole_sum ");
    cr_assert_not_null(line, "%s", out);
    cr_expect_not_null(strstr(line, "not checked: processes cannot gather this loss"), "%.300s",
                       line);
}

Test(check, gradient_off_by_two_fails_grad)
{
    static char out[OUT_CAP];
    const char *line = expect_failures(CF("double"), "FAIL grad cf_double ", 2, out, sizeof out);
    cr_expect_not_null(line_starting(out, "FAIL paths cf_double "), "%s", out);
    double e = max_rel_err(line);
    /* |2g - g| / |2g| = 0.5 */
    cr_expect_gt(e, 0.1, "max rel err %g is too small for a factor of 2: %.300s", e, line);
    cr_expect(e > 0.45 && e < 1.05, "max rel err %g, expected 0.5: %.300s", e, line);
}

Test(check, writing_into_an_input_fails_inputs)
{
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("writer"), "FAIL inputs cf_writer ", out, sizeof out);
    cr_expect_not_null(strstr(line, "'input'"), "the modified slot is not named: %.300s", line);
    /* the input is restored after each evaluation, so the gradient still checks */
    expect_line(out, "PASS grad cf_writer ");
}

Test(check, nan_on_extreme_logits_fails_extreme)
{
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("naive"), "FAIL extreme cf_naive ", out, sizeof out);
    cr_expect(strstr(line, "nan") || strstr(line, "inf"), "the bad value is not shown: %.300s",
              line);
    /* right on ordinary logits */
    expect_line(out, "PASS finite cf_naive ");
    expect_line(out, "PASS grad cf_naive ");
}

/* The value is linear in the weight, so only the gradient with the weight
 * bound shows the bug: the unweighted gradient against w times it. */
Test(check, gradient_ignoring_the_weight_fails_grad)
{
    static char out[OUT_CAP];
    const char *line =
        expect_one_failure(CF("weightgrad"), "FAIL grad cf_weightgrad ", out, sizeof out);
    cr_expect_not_null(strstr(line, "with weight"), "the weighted case is not named: %.300s", line);
    double e = max_rel_err(line);
    /* |g - w g| / max(|g|, |w g|) for w in [0.5, 1.5): up to 0.5 */
    cr_expect(e > 0.2 && e < 0.55, "max rel err %g, expected about 0.5: %.300s", e, line);
    expect_line(out, "PASS weight cf_weightgrad ");
}

/* Second in a weighted sum of itself (weights 1 and 2), a kernel that
 * stores gives 2 times its gradient where 3 is right. */
Test(check, storing_under_accumulate_fails_accumulate)
{
    static char out[OUT_CAP];
    const char *line =
        expect_one_failure(CF("store"), "FAIL accumulate cf_store ", out, sizeof out);
    const char *p = strstr(line, "(rel err ");
    cr_assert_not_null(p, "no \"(rel err\" in: %.300s", line);
    double e = strtod(p + strlen("(rel err "), NULL);
    cr_expect(e > 0.3 && e < 0.34, "rel err %g, expected 1/3: %.300s", e, line);
    cr_expect_not_null(strstr(line, "stored its gradient instead of adding"),
                       "the diagnosis is missing: %.300s", line);
    expect_line(out, "PASS grad cf_store ");
}

/* log(cosh(z)) overflows to inf at |z| = 1e4 without any NaN: finite inputs
 * must give finite values. */
Test(check, overflow_on_finite_inputs_fails_extreme)
{
    static char out[OUT_CAP];
    const char *line =
        expect_one_failure(CF("logcosh"), "FAIL extreme cf_logcosh ", out, sizeof out);
    cr_expect_not_null(strstr(line, "+-10000"), "the magnitude is not named: %.300s", line);
    cr_expect_not_null(strstr(line, "inf"), "the infinite value is not shown: %.300s", line);
    expect_line(out, "PASS grad cf_logcosh ");
}

/* The mean over an empty batch is 0 in losskit (docs/design.md), never
 * torch's 0/0: a finalize that divides by mean_norm without that case
 * gives NaN at dim 0 = 0, which the empty check must catch at every shape
 * it tries, (0,) first. */
Test(check, nan_on_an_empty_batch_fails_empty)
{
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("emptynan") " --loss cf_emptynan",
                                          "FAIL empty cf_emptynan ", out, sizeof out);
    cr_expect_not_null(strstr(line, "shape (0,) defaults mean"), "the case is not named: %.300s",
                       line);
    cr_expect_not_null(strstr(line, "value nan, not a finite number"), "no NaN shown: %.300s",
                       line);
    expect_line(out, "PASS finite cf_emptynan ");
    expect_line(out, "PASS grad cf_emptynan ");
}

/* A refusal fails too, at every probe shape with dim 0 = 0 (a rank-1 (0,)
 * alone may be refused: its one dim may be the classes). */
Test(check, refusing_an_empty_batch_fails_empty)
{
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("emptynan") " --loss cf_emptyrefuse",
                                          "FAIL empty cf_emptyrefuse ", out, sizeof out);
    cr_expect_not_null(strstr(line, "shape (0,3,5) defaults none"), "no case: %.300s", line);
    cr_expect_not_null(strstr(line, "refused (LK_ERR_SHAPE: loss 'cf_emptyrefuse': input: an "
                                    "empty batch)"),
                       "the refusal is not shown: %.300s", line);
}

/* A loss with ignore_index and a class slot: every target ignored must give
 * a finite value and zero gradients. cf_ignorenan handles the empty batch
 * but divides by the count of targets not ignored. */
Test(check, nan_when_every_target_is_ignored_fails_ignored)
{
    /* the ignored check fails; so do the setting ignore_index=0 (the
     * integer parameter moved) on the probe shape whose one class is 0,
     * where every target is ignored too, and nothing else */
    static char out[OUT_CAP];
    int rc = run_check(CF("ignorenan"), 0, out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    const char *line = line_starting(out, "FAIL ignored cf_ignorenan ");
    cr_assert_not_null(line, "no failed ignored check in:\n%s", out);
    cr_expect_not_null(strstr(line, "every 'target' = ignore_index -100"),
                       "the probe is not named: %.300s", line);
    cr_expect_not_null(strstr(line, "mean: value nan"), "the NaN is not shown: %.300s", line);
    for (const char *f = line_starting(out, "FAIL "); f; f = line_starting(f + 1, "FAIL ")) {
        char one[600];
        line_copy(f, one, sizeof one);
        cr_expect(!strncmp(one, "FAIL ignored ", 13) || strstr(one, " ignore_index=0 "),
                  "a failure beside the ignored ones: %s", one);
    }
    expect_line(out, "PASS empty cf_ignorenan ");
    expect_line(out, "PASS grad cf_ignorenan float64 shape (1,2,12,12) defaults ");
}

/* nll (ignore_index and a class-id target) passes the ignored check, and
 * its empty check runs every probe shape with a batch of 0. */
Test(check, builtin_losses_with_ignore_index_pass_ignored)
{
    static char out[OUT_CAP];
    int rc = run_check(LK_BUILD_ROOT "/plugins/classification.so --loss nll", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    const char *line = line_starting(out, "PASS ignored nll ");
    cr_assert_not_null(line, "no ignored line for nll:\n%s", out);
    cr_expect_not_null(strstr(line, "every 'target' = ignore_index -100"), "%.300s", line);
    line = line_starting(out, "PASS empty nll ");
    cr_assert_not_null(line, "no empty line for nll:\n%s", out);
    cr_expect_not_null(strstr(line, "shapes (0,3), (0,3,5), (0,1,4,4), (0,4), (0,2,12,12)"),
                       "the zero-batch probe shapes are missing: %.300s", line);
}

Test(check, crash_is_reported_and_the_next_loss_is_checked)
{
    static char out[OUT_CAP];
    const char *line = expect_one_failure(CF("crash"), "FAIL crash cf_crash: ", out, sizeof out);
    cr_expect_not_null(strstr(line, "killed by signal 11 (SIGSEGV) during "),
                       "no signal in: %.300s", line);
    /* the crash happens in the first evaluation; the label says which */
    cr_expect_not_null(strstr(line, "during finite"), "the check is not named: %.300s", line);
    static const char *const after[] = {"schema",  "finite", "grad",    "reduce",
                                        "threads", "empty",  "extreme", "inputs"};
    for (size_t k = 0; k < sizeof after / sizeof after[0]; k++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "PASS %s cf_after ", after[k]);
        expect_line(out, prefix);
    }
}

/* ------------------------------------------------------------------------ */
/* --json says what the text says                                            */

static void expect_json_agrees(const char *plugin)
{
    static char text[OUT_CAP], json[OUT_CAP];
    char args[1024];
    int rc_text = run_check(plugin, 0, text, sizeof text);
    snprintf(args, sizeof args, "%s --json", plugin);
    int rc_json = run_check(args, 0, json, sizeof json);
    int passed, failed;
    summary(text, &passed, &failed);
    cr_expect_eq(rc_json, rc_text, "%s: exit %d with --json, %d without", plugin, rc_json, rc_text);
    cJSON *root = cJSON_Parse(json);
    cr_assert_not_null(root, "%s: --json output does not parse:\n%.2000s", plugin, json);
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(root, "plugin");
    const cJSON *checks = cJSON_GetObjectItemCaseSensitive(root, "checks");
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(root, "passed");
    const cJSON *jf = cJSON_GetObjectItemCaseSensitive(root, "failed");
    cr_assert(cJSON_IsString(pl) && cJSON_IsArray(checks) && cJSON_IsNumber(jp) &&
                  cJSON_IsNumber(jf),
              "%s: missing plugin, checks, passed or failed", plugin);
    cr_expect_str_eq(pl->valuestring, plugin, "plugin");
    cr_expect_eq(jp->valueint, passed, "%s: passed %d in JSON, %d in text", plugin, jp->valueint,
                 passed);
    cr_expect_eq(jf->valueint, failed, "%s: failed %d in JSON, %d in text", plugin, jf->valueint,
                 failed);
    int n = cJSON_GetArraySize(checks), n_ok = 0;
    cr_expect_eq(n, passed + failed, "%s: %d checks for %d + %d", plugin, n, passed, failed);
    const cJSON *c;
    cJSON_ArrayForEach(c, checks)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(c, "loss");
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(c, "ok");
        const cJSON *detail = cJSON_GetObjectItemCaseSensitive(c, "detail");
        cr_expect(cJSON_IsString(name) && cJSON_IsBool(ok) && cJSON_IsString(detail) &&
                      (cJSON_IsString(loss) || cJSON_IsNull(loss)),
                  "%s: a check lacks name, loss, ok or detail", plugin);
        n_ok += cJSON_IsTrue(ok);
    }
    cr_expect_eq(n_ok, passed, "%s: %d ok in JSON, %d passed", plugin, n_ok, passed);
    cJSON_Delete(root);
}

Test(check, json_agrees_with_text)
{
    static const char *const plugins[] = {CF("good"),  CF("sign"),  CF("double"), CF("writer"),
                                          CF("crash"), CF("naive"), TUTORIAL};
    for (size_t i = 0; i < sizeof plugins / sizeof plugins[0]; i++)
        expect_json_agrees(plugins[i]);
}

Test(check, json_carries_the_numbers)
{
    static char json[OUT_CAP];
    run_check(CF("double") " --json", 0, json, sizeof json);
    cJSON *root = cJSON_Parse(json);
    cr_assert_not_null(root, "does not parse:\n%.2000s", json);
    const cJSON *c, *grad = NULL, *crash = NULL;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "checks"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "grad") == 0)
            grad = c;
    }
    cr_assert_not_null(grad, "no grad check");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(grad, "max_rel_err");
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(grad, "tol");
    cr_assert(cJSON_IsNumber(e) && cJSON_IsNumber(tol), "no max_rel_err or tol");
    cr_expect(e->valuedouble > 0.1 && e->valuedouble > tol->valuedouble, "max_rel_err %g",
              e->valuedouble);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(grad, "ok")), "grad passed");
    cJSON_Delete(root);

    run_check(CF("crash") " --json", 0, json, sizeof json);
    root = cJSON_Parse(json);
    cr_assert_not_null(root, "does not parse:\n%.2000s", json);
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "checks"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "crash") == 0)
            crash = c;
    }
    cr_assert_not_null(crash, "no crash check");
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(crash, "signal");
    cr_expect(cJSON_IsNumber(sig) && sig->valueint == 11, "signal is not 11");
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(crash, "loss")->valuestring, "cf_crash",
                     "loss");
    cJSON_Delete(root);
}

/* ------------------------------------------------------------------------ */
/* Options and exit codes                                                    */

Test(check, loss_option_restricts_to_one_loss)
{
    static char out[OUT_CAP];
    int rc = run_check(TUTORIAL " --loss focal", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    expect_line(out, "PASS grad focal ");
    for (const char *line = out; line && *line;) {
        int is_result = strncmp(line, "PASS ", 5) == 0 || strncmp(line, "FAIL ", 5) == 0;
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        if (is_result && strncmp(line + 5, "abi ", 4) != 0)
            cr_expect(strncmp(strchr(line + 5, ' '), " focal ", 7) == 0,
                      "a line about another loss: %.*s", len, line);
        line = end ? end + 1 : NULL;
    }
    /* a crashing loss elsewhere in the plugin does not matter */
    rc = run_check(CF("crash") " --loss cf_after", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    cr_expect_null(line_starting(out, "PASS schema cf_crash "), "cf_crash was checked:\n%s", out);
    cr_expect_null(line_starting(out, "FAIL crash cf_crash"), "cf_crash was checked:\n%s", out);
}

Test(check, unknown_loss_is_a_usage_error_with_the_closest_name)
{
    static char out[OUT_CAP];
    int rc = run_check(TUTORIAL " --loss focl", 1, out, sizeof out);
    cr_expect_eq(rc, 2, "exit %d:\n%s", rc, out);
    cr_expect_not_null(strstr(out, "'focal'"), "no closest name in:\n%s", out);
    cr_expect_null(line_starting(out, "PASS "), "checks ran:\n%s", out);
}

Test(check, refused_plugin_exits_3_with_the_diagnostic)
{
    static char out[OUT_CAP];
    int rc = run_check(LK_FIXTURE_DIR "/fx_wrong_major.so", 1, out, sizeof out);
    cr_expect_eq(rc, 3, "exit %d:\n%s", rc, out);
    cr_expect_not_null(strstr(out, "losskit: "), "not a cli_error line:\n%s", out);
    cr_expect_not_null(strstr(out, "ABI 2.0"), "no diagnostic:\n%s", out);
    rc = run_check(CHECK_DIR "/no_such_plugin.so", 1, out, sizeof out);
    cr_expect_eq(rc, 3, "exit %d for a missing file:\n%s", rc, out);
    cr_expect_not_null(strstr(out, "no_such_plugin.so"), "the file is not named:\n%s", out);
}

/* `check --all --loss ID`: the file that serves ID alone, its checks of
 * ID only; an unknown ID is a usage error (it checked nothing and passed);
 * a plugin on the path that cannot be loaded fails the run with exit 3
 * after the others are checked (it passed with 0). */
Test(check, all_with_a_loss_and_plugins_not_loaded)
{
    static char out[OUT_CAP];
    int rc = run_check("--all --loss focl", 1, out, sizeof out);
    cr_expect_eq(rc, 2, "exit %d:\n%s", rc, out);
    cr_expect_not_null(strstr(out, "unknown loss 'focl'"), "%s", out);
    cr_expect_null(line_starting(out, "PASS "), "checks ran:\n%s", out);
    rc = run_check("--all --loss focal", 0, out, sizeof out);
    cr_expect_eq(rc, 0, "exit %d:\n%s", rc, out);
    expect_line(out, "PASS grad focal ");
    expect_line(out, "1 plugin checked, 0 with failures");
    cr_expect_null(line_starting(out, "PASS grad dice "), "another loss was checked:\n%s", out);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "LOSSKIT_PLUGIN_PATH='%s' '%s' check --all --loss focal 2>&1",
             LK_FIXTURE_DIR "/fx_wrong_major.so", LK_CLI_PATH);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen(%s)", cmd);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    int status = pclose(p);
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    cr_expect_eq(rc, 3, "exit %d:\n%s", rc, out);
    cr_expect_not_null(strstr(out, "warning: plugin not loaded: "), "%s", out);
    expect_line(out, "PASS grad focal ");
    expect_line(out, "1 plugin checked, 0 with failures, 1 not loaded (see the warnings above)");
}

Test(check, usage_errors_exit_2)
{
    static char out[OUT_CAP];
    static const char *const args[] = {
        "",                        /* no plugin */
        CF("good") " --bogus",     /* unknown option */
        CF("good") " " CF("sign"), /* two plugins */
        CF("good") " --loss",      /* --loss without an id */
        CHECK_DIR,                 /* a directory, not a file */
    };
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        int rc = run_check(args[i], 1, out, sizeof out);
        cr_expect_eq(rc, 2, "`check %s`: exit %d:\n%s", args[i], rc, out);
        cr_expect_not_null(strstr(out, "losskit: check: "), "`check %s`:\n%s", args[i], out);
    }
}
