/* test_config.c: JSON configs through lk_loss_from_json.
 *
 * Every refusal is checked for LK_ERR_CONFIG, a NULL loss, and a one-line
 * message "SOURCE: $.json.path: problem" that names the source, the path and
 * the specific problem (with its suggestion where there is one). The
 * successes evaluate what was built: defaults written out or left implicit
 * give the same values, a weighted sum is the weighted sum of its terms (value
 * and gradient), and dice_bce equals the sum of its two parts.
 *
 * The tutorial losses come from the build tree's plugin folder (default
 * options). The tutorial family has no boolean or integer parameter, so those
 * checks use the fixture plugin fx_good.so, which has one of every type. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "losskit/losskit.h"

#define SRC "cfg.json"

static lk_runtime *rt;

static void open_runtime(const char *plugin_path)
{
    lk_runtime_options opts;
    lk_runtime_options_init(&opts);
    opts.plugin_path = plugin_path;
    char err[LK_ERRMSG_CAP] = "";
    lk_status st = lk_runtime_open(&opts, &rt, err);
    cr_assert_eq(st, LK_OK, "lk_runtime_open: %s", err);
    cr_assert_not_null(rt);
    for (size_t i = 0; i < lk_runtime_diag_count(rt); i++)
        cr_log_warn("load diagnostic: %s", lk_runtime_diag(rt, i));
    lk_loss_info li;
    cr_assert_eq(lk_runtime_find(rt, "dice_bce", &li, NULL), LK_OK,
                 "the tutorial plugin was not found on the default path");
    cr_assert_str_eq(li.plugin_name, "tutorial");
}

static void open_default(void)
{
    open_runtime(NULL);
}

static void open_fixture(void)
{
    open_runtime(LK_FIXTURE_DIR "/fx_good.so");
    lk_loss_info li;
    cr_assert_eq(lk_runtime_find(rt, "fx_count", &li, NULL), LK_OK,
                 "fx_good.so did not load from %s", LK_FIXTURE_DIR);
}

static void close_runtime(void)
{
    lk_runtime_close(rt);
    rt = NULL;
}

TestSuite(config, .init = open_default, .fini = close_runtime);
TestSuite(config_fx, .init = open_fixture, .fini = close_runtime);

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Builds json expecting LK_ERR_CONFIG with a one-line message that starts
 * with "SRC" and contains every NULL-terminated needle. */
static void expect_error(const char *json, ...)
{
    lk_loss *loss = (lk_loss *)(uintptr_t)1;
    char msg[LK_ERRMSG_CAP];
    memset(msg, 0, sizeof msg);
    lk_status st = lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg);
    cr_assert_eq(st, LK_ERR_CONFIG, "%s: status %s, want LK_ERR_CONFIG; message: %s", json,
                 lk_status_name(st), msg);
    cr_assert_null(loss, "%s: *out is not NULL on failure", json);
    cr_assert(strncmp(msg, SRC, strlen(SRC)) == 0, "message does not start with the source: %s",
              msg);
    cr_assert_null(strchr(msg, '\n'), "message is not one line: [%s]", msg);
    va_list ap;
    va_start(ap, json);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        cr_expect(strstr(msg, needle) != NULL, "%s: message lacks \"%s\": %s", json, needle, msg);
    va_end(ap);
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

#define N 24
static const int64_t shape3[3] = {2, 3, 4};

/* Deterministic logits in about [-3, 3] and targets in [0, 1], some of them
 * exactly 0 or 1 and some soft. */
static void make_data(double *x, double *t)
{
    for (int i = 0; i < N; i++) {
        x[i] = 3.0 * sin(1.3 * i + 0.2);
        double r = 0.5 + 0.5 * cos(0.7 * i);
        t[i] = i % 3 == 0 ? r : (r > 0.5 ? 1.0 : 0.0);
    }
}

static lk_tensor f64_tensor(double *data)
{
    lk_tensor tt = {data, LK_DTYPE_F64, 3, shape3, NULL};
    return tt;
}

/* Evaluates loss on x, t (N doubles); grad (N doubles) may be NULL. */
static double eval(const lk_loss *loss, double *x, double *t, double *grad)
{
    lk_named_tensor in[2] = {
        {"input", f64_tensor(x), "x"},
        {"target", f64_tensor(t), "t"},
    };
    lk_named_tensor g[1] = {{"input", f64_tensor(grad), "g"}};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 2;
    if (grad) {
        for (int i = 0; i < N; i++)
            grad[i] = NAN; /* must be entirely overwritten */
        args.grads = g;
        args.n_grads = 1;
    }
    double v = NAN;
    lk_status st = lk_loss_eval(loss, &args, &v);
    cr_assert_eq(st, LK_OK, "lk_loss_eval(%s): %s: %s", lk_loss_name(loss), lk_status_name(st),
                 args.errmsg);
    cr_assert(isfinite(v), "%s: value %g", lk_loss_name(loss), v);
    return v;
}

static double eval_json(const char *json, double *x, double *t, double *grad)
{
    lk_loss *loss = build(json);
    double v = eval(loss, x, t, grad);
    lk_loss_free(loss);
    return v;
}

static int close_to(double a, double b, double tol)
{
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

/* ------------------------------------------------------------------------ */
/* Syntax and the root                                                       */

Test(config, invalid_json_names_line_and_column)
{
    /* the stray token 'mean' starts on line 2, column 15 */
    expect_error("{\"loss\": \"mse\",\n \"reduction\": mean}", SRC ":2:15:", "invalid JSON", "mean",
                 NULL);
}

Test(config, invalid_json_on_first_line)
{
    expect_error("{\"loss\": \"mse\",, }", SRC ":1:", "invalid JSON", NULL);
}

/* The message quotes the text near the error; when that text holds a line
 * break, the message must still be one line. */
Test(config, invalid_json_message_stays_one_line)
{
    expect_error("{\"loss\": mse\n}", SRC ":1:10:", "invalid JSON", NULL);
}

/* Text after the root value is not JSON either. */
Test(config, trailing_garbage_is_invalid_json)
{
    expect_error("{\"loss\": \"mse\"} extra", SRC ":1:", "invalid JSON", NULL);
}

/* A syntax error says what was expected where the reading stopped, at
 * that place (file:line:col). */
Test(config, invalid_json_says_what_was_expected)
{
    /* a trailing comma in a multi-line object: the '}' on line 4 */
    expect_error("{\"loss\": \"focal\",\n \"params\": {\n  \"gamma\": 2,\n }\n}",
                 SRC ":4:2: invalid JSON: expected a key after ',' (JSON allows no ',' before '}') "
                     "near '}'",
                 NULL);
    expect_error("{\"loss\": \"mse\", \"x\": [1, 2,]}",
                 SRC ":1:28: invalid JSON: expected a value after ',' (JSON allows no ',' before "
                     "']') near ']}'",
                 NULL);
    expect_error("{\"loss\" \"mse\"}",
                 SRC ":1:9: invalid JSON: expected ':' after a key near '\"mse\"}'", NULL);
    expect_error("{\"loss\": \"mse\" \"reduction\": \"sum\"}",
                 SRC ":1:16: invalid JSON: expected ',' or '}' after a value in an object near "
                     "'\"reduction\": \"su'",
                 NULL);
    expect_error(
        "{\"loss\": \"mse\", \"x\": [1 2]}",
        SRC ":1:25: invalid JSON: expected ',' or ']' after a value in an array near '2]}'", NULL);
    /* JSON white space is space, tab, CR and LF: a form feed is named */
    expect_error("{\"loss\":\f\"mse\"}",
                 SRC ":1:9: invalid JSON: expected a value (a string, number, object, array, true, "
                     "false or null), found byte 0x0c",
                 NULL);
}

/* A file cut short says so, at its end, instead of quoting its last
 * character. */
Test(config, truncated_json_says_end_of_file)
{
    expect_error("{\"loss\": \"focal\", \"params\": {\"alpha\": 0.25",
                 SRC ":1:43: invalid JSON: unexpected end of file (expected ',' or '}' after a "
                     "value in an object)",
                 NULL);
    expect_error("{\"loss\": \"foc",
                 SRC ":1:14: invalid JSON: unexpected end of file (expected '\"' to close a "
                     "string)",
                 NULL);
    expect_error("{\"loss\": \"mse\",\n",
                 SRC ":2:1: invalid JSON: unexpected end of file "
                     "(expected a key (a string in double quotes) after ',')",
                 NULL);
    expect_error("{\"loss\": tr", SRC ":1:12: invalid JSON: unexpected end of file", NULL);
    expect_error("", SRC ":1:1: invalid JSON: unexpected end of file (expected a value)", NULL);
    expect_error("  \n", SRC ":2:1: invalid JSON: unexpected end of file (expected a value)", NULL);
}

/* cJSON reads at most 1000 nested arrays and objects; one more is named
 * as that limit, not as "invalid JSON near '[[[['". */
Test(config, nesting_limit_is_named)
{
    static char json[6000];
    memset(json, '[', 1001);
    memset(json + 1001, ']', 1001);
    json[2002] = '\0';
    expect_error(json,
                 SRC ":1:1001: invalid JSON: more than 1000 nested arrays and objects (the JSON "
                     "reader's nesting limit) near '[]]]]]]]]]]]]]]]'",
                 NULL);
    /* 1000 is within the limit: the error is then the schema's */
    memset(json, '[', 1000);
    memset(json + 1000, ']', 1000);
    json[2000] = '\0';
    expect_error(json, SRC ": $: expected an object, got an array", NULL);
    /* the config object is one level: its 1000th nested object is too deep */
    size_t n = (size_t)snprintf(json, sizeof json, "{\"loss\": \"mse\", \"description\": ");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(json + n, sizeof json - n, "{\"a\":");
    snprintf(json + n, sizeof json - n, "1}");
    char want[160];
    snprintf(want, sizeof want,
             SRC ":1:%zu: invalid JSON: more than 1000 nested arrays and objects (the JSON "
                 "reader's nesting limit) near '{\"a\":1}'",
             n - 5 + 1);
    expect_error(json, want, NULL);
}

/* Numbers are JSON numbers: cJSON also takes 01 (as 1), 1., -.5 and 00;
 * each is refused at its place. */
Test(config, numbers_must_be_json_numbers)
{
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": 01}}",
                 SRC ":1:39: invalid JSON: a number with a leading zero (JSON writes 1 or 0.5, not "
                     "01) near '01}}'",
                 NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": -00.5}}",
                 SRC ":1:39: invalid JSON: a number with a leading zero", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": 00}}",
                 SRC ":1:39: invalid JSON: a number with a leading zero", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": 1.}}",
                 SRC ":1:41: invalid JSON: expected a digit after '.' in a number near '}}'", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": -.5}}",
                 SRC ":1:40: invalid JSON: expected a digit after '-' near '.5}}'", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": 1e+}}",
                 SRC ":1:42: invalid JSON: expected a digit in the exponent of a number near '}}'",
                 NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": .5}}",
                 SRC ":1:39: invalid JSON: expected a value", NULL);
    /* what JSON allows builds */
    static const char *const ok[] = {"0", "-0", "0.5", "2", "2.0", "1e0", "1E+0", "25e-1", "0e5"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"loss\": \"focal\", \"params\": {\"gamma\": %s}}", ok[i]);
        lk_loss_free(build(json));
    }
}

/* Escapes are JSON's: cJSON read "\uZZZZ" as a NUL, which cut the string
 * short ("focal\uzzzzxyz" ran focal); half a surrogate pair is refused too. */
Test(config, string_escapes_must_be_valid)
{
    expect_error("{\"loss\": \"focal\\uzzzzxyz\"}",
                 SRC ":1:16: invalid JSON: \\u in a string must be followed by 4 hex digits near "
                     "'\\uzzzzxyz\"}'",
                 NULL);
    expect_error("{\"loss\": \"x\\q\"}",
                 SRC ":1:12: invalid JSON: invalid escape in a string (JSON has \\\" \\\\ \\/ \\b "
                     "\\f \\n \\r \\t and \\uXXXX)",
                 NULL);
    expect_error("{\"loss\": \"\\ud800\"}",
                 SRC ":1:11: invalid JSON: a \\u escape holds half of a UTF-16 surrogate pair "
                     "without the other half",
                 NULL);
    expect_error("{\"loss\": \"\\udc00\\ud800\"}",
                 SRC ":1:11: invalid JSON: a \\u escape holds half", NULL);
    /* a whole pair is a character: an unknown loss, not a syntax error */
    expect_error("{\"loss\": \"\\ud83d\\ude00\"}", SRC ": $.loss: unknown loss", NULL);
}

Test(config, root_not_an_object)
{
    expect_error("[1, 2]", SRC ": $: ", "expected an object, got an array", NULL);
    expect_error("\"mse\"", SRC ": $: ", "expected an object, got a string", NULL);
}

Test(config, unknown_top_level_key_suggests_closest)
{
    expect_error("{\"los\": \"mse\"}", SRC ": $: ", "unknown key 'los'", "did you mean 'loss'?",
                 NULL);
    expect_error("{\"loss\": \"mse\", \"reductoin\": \"sum\"}",
                 SRC ": $: ", "unknown key 'reductoin'", "did you mean 'reduction'?", NULL);
}

/* A parameter written beside "loss" is named as the loss's parameter, at
 * the top level and in a term; a key that is no parameter of the loss
 * keeps the plain message. */
Test(config, parameter_outside_params_says_where_it_belongs)
{
    expect_error("{\"loss\": \"focal\", \"gamma\": 1}", SRC ": $: ",
                 "unknown key 'gamma': it is a parameter of loss 'focal'",
                 "goes under \"params\", as in \"params\": {\"gamma\": ...}", NULL);
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"focal\", \"alpha\": 0.5}]}",
                 SRC ": $.terms[1]: ", "unknown key 'alpha': it is a parameter of loss 'focal'",
                 NULL);
    expect_error("{\"loss\": \"mse\", \"gamma\": 1}", SRC ": $: ", "unknown key 'gamma' (allowed:",
                 NULL);
    expect_error("{\"loss\": \"focall\", \"gamma\": 1}", SRC ": $: ", "unknown key 'gamma' (allowed:",
                 NULL);
}

/* cJSON's allocator failing on a config the syntax check took: out of
 * memory (LK_ERR_NOMEM), not a syntax error. */
static void *no_memory(size_t n)
{
    (void)n;
    return NULL;
}

Test(config, parser_out_of_memory_is_out_of_memory)
{
    cJSON_Hooks hooks = {no_memory, free};
    cJSON_InitHooks(&hooks);
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    const char *json = "{\"loss\": \"mse\", \"reduction\": \"sum\"}";
    lk_status st = lk_loss_from_json(rt, json, strlen(json), SRC, &loss, msg);
    cJSON_InitHooks(NULL);
    cr_assert_eq(st, LK_ERR_NOMEM, "status %s: %s", lk_status_name(st), msg);
    cr_assert_null(loss);
    cr_assert_str_eq(msg, SRC ": out of memory");
    lk_loss_free(build(json)); /* the allocator back: the same config builds */
}

Test(config, missing_loss)
{
    expect_error("{}", SRC ": $: ", "missing key 'loss'", NULL);
    expect_error("{\"reduction\": \"mean\"}", SRC ": $: ", "missing key 'loss'", NULL);
}

Test(config, loss_not_a_string)
{
    expect_error("{\"loss\": 3}", SRC ": $.loss: ", "expected a loss id (a string), got a number",
                 NULL);
}

Test(config, unknown_loss_suggests_closest)
{
    expect_error("{\"loss\": \"dcie\"}", SRC ": $.loss: ", "unknown loss 'dcie'",
                 "did you mean 'dice'?", NULL);
}

Test(config, description_must_be_a_string)
{
    expect_error("{\"loss\": \"mse\", \"description\": 1}",
                 SRC ": $.description: ", "expected a string, got a number", NULL);
    lk_loss_free(build("{\"loss\": \"mse\", \"description\": \"fine\"}"));
}

/* ------------------------------------------------------------------------ */
/* Parameters                                                                */

Test(config, unknown_param_suggests_closest)
{
    expect_error("{\"loss\": \"focal\", \"params\": {\"gama\": 2}}",
                 SRC ": $.params: ", "unknown parameter 'gama'", "'focal'", "did you mean 'gamma'?",
                 NULL);
}

Test(config, params_not_an_object)
{
    expect_error("{\"loss\": \"focal\", \"params\": [2]}",
                 SRC ": $.params: ", "expected an object, got an array", NULL);
}

Test(config, string_for_a_number)
{
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": \"2\"}}",
                 SRC ": $.params.gamma: ", "expected a number, got a string", NULL);
}

Test(config, out_of_range)
{
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": -1}}",
                 SRC ": $.params.gamma: ", "-1 is out of range [0, inf]", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"alpha\": -1.5}}",
                 SRC ": $.params.alpha: ", "-1.5 is out of range [-1, inf]", NULL);
    /* alpha is a list that multiclass mode reads as class weights; binary
     * mode's bound of 1 is the loss's own check */
    expect_error("{\"loss\": \"focal\", \"params\": {\"alpha\": 1.5}}",
                 SRC ": $.params: ", "alpha = 1.5 is out of range [-1, 1]", NULL);
}

Test(config, list_with_a_non_number_item)
{
    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [1, \"2\"]}}",
                 SRC ": $.params.pos_weight[1]: ", "expected a number, got a string", NULL);
}

Test(config, list_item_out_of_range)
{
    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [1, 2, -3]}}",
                 SRC ": $.params.pos_weight[2]: ", "-3 is out of range [0, inf]", NULL);
}

Test(config, list_not_an_array)
{
    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": \"2\"}}",
                 SRC ": $.params.pos_weight: ",
                 "expected a number or an array of numbers, got a string", NULL);
}

Test(config, bare_number_out_of_range)
{
    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": -3}}",
                 SRC ": $.params.pos_weight: ", "-3 is out of range [0, inf]", NULL);
}

/* A bare number where a list is expected is a list of one: the same loss
 * as [2], and not the default []. */
Test(config, bare_number_is_a_list_of_one)
{
    double x[N], t[N], g1[N], g2[N], g0[N];
    make_data(x, t);
    double bare =
        eval_json("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": 2}}", x, t, g1);
    double list =
        eval_json("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": [2]}}", x, t, g2);
    double dflt = eval_json("{\"loss\": \"bce_with_logits\"}", x, t, g0);
    cr_expect_eq(bare, list, "pos_weight 2 gives %.17g, [2] gives %.17g", bare, list);
    cr_expect_neq(bare, dflt, "pos_weight 2 gives the default's value %.17g", dflt);
    for (int i = 0; i < N; i++)
        cr_expect_eq(g1[i], g2[i], "grad[%d]: %.17g vs %.17g", i, g1[i], g2[i]);
}

/* A parameter without a default (`losskit info`: unset) may be written
 * null: the same loss as leaving it out, and not the loss of any value a
 * config could give. A parameter with a default refuses null. */
Test(config, null_leaves_a_parameter_without_a_default_unset)
{
    double x[N], t[N], g0[N], g1[N], g2[N];
    make_data(x, t);
    double left_out = eval_json("{\"loss\": \"bce_with_logits\"}", x, t, g0);
    double null = eval_json("{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": null}}",
                            x, t, g1);
    double zero =
        eval_json("{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": 0}}", x, t, g2);
    cr_expect_eq(null, left_out, "ignore_index null gives %.17g, left out %.17g", null, left_out);
    cr_expect_neq(null, zero, "ignore_index null ignores the targets of 0: %.17g", zero);
    for (int i = 0; i < N; i++)
        cr_expect_eq(g1[i], g0[i], "grad[%d]: %.17g vs %.17g", i, g1[i], g0[i]);

    /* dice's smooth_dr, unset, is smooth's value (1), not its placeholder 0 */
    double dr_left_out = eval_json("{\"loss\": \"dice\"}", x, t, NULL);
    double dr_null =
        eval_json("{\"loss\": \"dice\", \"params\": {\"smooth_dr\": null}}", x, t, NULL);
    double dr_one = eval_json("{\"loss\": \"dice\", \"params\": {\"smooth_dr\": 1}}", x, t, NULL);
    double dr_zero = eval_json("{\"loss\": \"dice\", \"params\": {\"smooth_dr\": 0}}", x, t, NULL);
    cr_expect_eq(dr_null, dr_left_out, "smooth_dr null %.17g, left out %.17g", dr_null,
                 dr_left_out);
    cr_expect_eq(dr_null, dr_one, "smooth_dr null %.17g, 1 %.17g", dr_null, dr_one);
    cr_expect_neq(dr_null, dr_zero, "smooth_dr null gives smooth_dr 0's %.17g", dr_zero);

    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"label_smoothing\": null}}",
                 SRC ": $.params.label_smoothing: ", "null, but this parameter has a default",
                 "losskit info bce_with_logits", NULL);
    expect_error("{\"loss\": \"dice\", \"params\": {\"mode\": null}}",
                 SRC ": $.params.mode: ", "has a default", NULL);
}

Test(config_fx, number_for_a_bool)
{
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"squared\": 1}}",
                 SRC ": $.params.squared: ", "expected true or false, got a number", NULL);
}

Test(config_fx, integer_with_a_fraction)
{
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": 2.5}}",
                 SRC ": $.params.ignore_index: ", "expected an integer, got 2.5", NULL);
}

Test(config_fx, integer_out_of_range)
{
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": 5000}}",
                 SRC ": $.params.ignore_index: ", "5000 is out of range [-1000, 1000]", NULL);
}

Test(config_fx, exclusive_minimum)
{
    expect_error("{\"loss\": \"fx_sq\", \"params\": {\"scale\": 0}}",
                 SRC ": $.params.scale: ", "0 is out of range (0, 100]", NULL);
}

Test(config_fx, list_too_long)
{
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"weights\": [1, 1, 1, 1, 1]}}",
                 SRC ": $.params.weights: ", "has 5 items; expected 1 to 4", NULL);
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"weights\": []}}",
                 SRC ": $.params.weights: ", "has 0 items; expected 1 to 4", NULL);
}

Test(config_fx, unknown_choice_suggests_closest)
{
    expect_error("{\"loss\": \"fx_sq\", \"params\": {\"mode\": \"hlaf\"}}",
                 SRC ": $.params.mode: ", "'hlaf' is not one of: plain, half",
                 "did you mean 'half'?", NULL);
}

Test(config_fx, number_for_a_choice)
{
    expect_error("{\"loss\": \"fx_sq\", \"params\": {\"mode\": 1}}",
                 SRC ": $.params.mode: ", "expected a string, got a number", NULL);
}

Test(config_fx, string_for_an_integer)
{
    expect_error("{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": \"3\"}}",
                 SRC ": $.params.ignore_index: ", "expected a number, got a string", NULL);
}

/* ------------------------------------------------------------------------ */
/* Reductions                                                                */

Test(config, unknown_reduction)
{
    expect_error("{\"loss\": \"mse\", \"reduction\": \"avg\"}", SRC ": $.reduction: ",
                 "unknown reduction 'avg' (this loss offers: none, mean, sum)", NULL);
    /* what the loss offers, not every reduction there is */
    expect_error("{\"loss\": \"multi_margin\", \"reduction\": \"batch_mean\"}",
                 SRC ": $.reduction: ",
                 "unknown reduction 'batch_mean' (this loss offers: none, mean, sum)", NULL);
    expect_error("{\"loss\": \"kl_div\", \"reduction\": \"batch_mean\"}",
                 SRC ": $.reduction: ",
                 "unknown reduction 'batch_mean' (this loss offers: none, mean, sum, batchmean)",
                 NULL);
    expect_error("{\"terms\": [{\"loss\": \"kl_div\"}, {\"loss\": \"mse\"}], \"reduction\": "
                 "\"avg\"}",
                 SRC ": $.reduction: ", "unknown reduction 'avg' (every term offers: mean, sum)",
                 NULL);
    expect_error("{\"loss\": \"mse\", \"reduction\": 1}",
                 SRC ": $.reduction: ", "expected a string, got a number", NULL);
}

Test(config, reduction_not_offered_by_the_loss)
{
    expect_error("{\"loss\": \"dice\", \"reduction\": \"none\"}",
                 SRC ": $.reduction: ", "loss 'dice' does not offer reduction 'none'",
                 "it offers: mean", NULL);
}

Test(config, reduction_not_offered_by_one_term)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"iou\"}], \"reduction\": \"sum\"}",
                 SRC ": $.reduction: ", "loss 'iou' does not offer reduction 'sum'",
                 "it offers: mean", NULL);
}

/* ------------------------------------------------------------------------ */
/* Terms                                                                     */

Test(config, terms_not_an_array)
{
    expect_error("{\"terms\": {\"loss\": \"mse\"}}",
                 SRC ": $.terms: ", "expected an array of terms, got an object", NULL);
}

Test(config, terms_empty)
{
    expect_error("{\"terms\": []}", SRC ": $.terms: ", "has 0 terms", NULL);
}

Test(config, term_not_an_object)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, 3]}",
                 SRC ": $.terms[1]: ", "expected an object, got a number", NULL);
}

/* Like an unknown parameter (reported at $.params), an unknown key is
 * reported at the object that holds it and named. */
Test(config, term_unknown_key_suggests_closest)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"dice\", \"wieght\": 0.5}]}",
                 SRC ": $.terms[1]: ", "unknown key 'wieght'", "did you mean 'weight'?", NULL);
}

Test(config, term_errors_carry_the_term_path)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"dcie\"}]}",
                 SRC ": $.terms[1].loss: ", "unknown loss 'dcie'", "did you mean 'dice'?", NULL);
    expect_error("{\"terms\": [{\"loss\": \"focal\", \"params\": {\"gamma\": -1}}]}",
                 SRC ": $.terms[0].params.gamma: ", "-1 is out of range [0, inf]", NULL);
    expect_error("{\"terms\": [{\"loss\": \"focal\", \"params\": {\"gama\": 1}}]}",
                 SRC ": $.terms[0].params: ", "unknown parameter 'gama'", "did you mean 'gamma'?",
                 NULL);
    expect_error("{\"terms\": [{\"weight\": 1}]}", SRC ": $.terms[0].loss: ", "missing key 'loss'",
                 NULL);
}

Test(config, term_weight_must_be_a_number)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\", \"weight\": \"half\"}]}",
                 SRC ": $.terms[0].weight: ", "expected a finite number, got a string", NULL);
}

/* A literal beyond the range of a double (cJSON reads it as inf) is named
 * as such, as written. */
Test(config, term_weight_beyond_a_double)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\", \"weight\": 1e400}]}",
                 SRC ": $.terms[0].weight: 1e400 is beyond the range of a double (about 1.8e308 at "
                     "most)",
                 NULL);
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"l1\", \"weight\": -2.5E+999}]}",
                 SRC ": $.terms[1].weight: -2.5E+999 is beyond the range of a double", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"gamma\": 1e400}}",
                 SRC ": $.params.gamma: 1e400 is beyond the range of a double (about 1.8e308 at "
                     "most)",
                 NULL);
}

Test(config, loss_and_terms_together)
{
    expect_error("{\"loss\": \"mse\", \"terms\": [{\"loss\": \"l1\"}]}", SRC ": $: ", "'loss'",
                 "'terms'", "not both", NULL);
}

Test(config, reduction_none_with_several_terms)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"l1\"}], \"reduction\": \"none\"}",
                 SRC ": $.reduction: ", "'none' is not available for a weighted sum", NULL);
}

Test(config, weight_only_inside_terms)
{
    expect_error("{\"loss\": \"mse\", \"weight\": 2}", SRC ": $: ", "unknown key 'weight'", NULL);
}

Test(config, default_source_name)
{
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    const char *json = "{\"los\": \"mse\"}";
    cr_assert_eq(lk_loss_from_json(rt, json, strlen(json), NULL, &loss, msg), LK_ERR_CONFIG);
    cr_assert(strncmp(msg, "<config>: $: ", 13) == 0, "message: %s", msg);
}

/* ------------------------------------------------------------------------ */
/* Successes                                                                 */

Test(config, defaults_are_filled_in)
{
    double x[N], t[N];
    make_data(x, t);
    double implicit = eval_json("{\"loss\": \"focal\"}", x, t, NULL);
    double written = eval_json("{\"loss\": \"focal\", \"params\": {\"alpha\": 0.25, \"gamma\": 2}, "
                               "\"reduction\": \"mean\"}",
                               x, t, NULL);
    cr_assert_eq(implicit, written, "focal: defaults %.17g, written out %.17g", implicit, written);
    /* the comparison can tell parameters apart */
    double other = eval_json("{\"loss\": \"focal\", \"params\": {\"gamma\": 0}}", x, t, NULL);
    cr_assert(fabs(other - implicit) > 1e-3, "gamma 0 gives %.17g, gamma 2 gives %.17g", other,
              implicit);

    implicit = eval_json("{\"loss\": \"dice\"}", x, t, NULL);
    written = eval_json(
        "{\"loss\": \"dice\", \"params\": {\"smooth\": 1}, \"reduction\": \"mean\"}", x, t, NULL);
    cr_assert_eq(implicit, written, "dice: defaults %.17g, written out %.17g", implicit, written);
    other = eval_json("{\"loss\": \"dice\", \"params\": {\"smooth\": 0}}", x, t, NULL);
    cr_assert(other != implicit, "smooth 0 and smooth 1 give the same dice");

    implicit = eval_json("{\"loss\": \"bce_with_logits\"}", x, t, NULL);
    written = eval_json("{\"loss\": \"bce_with_logits\", \"params\": {\"pos_weight\": []}, "
                        "\"reduction\": \"mean\"}",
                        x, t, NULL);
    cr_assert_eq(implicit, written, "bce: defaults %.17g, written out %.17g", implicit, written);
}

Test(config, default_reduction_is_the_loss_default)
{
    lk_loss *loss = build("{\"loss\": \"mse\"}");
    cr_assert_eq(lk_loss_reduction(loss), LK_REDUCTION_MEAN);
    lk_loss_free(loss);
    loss = build("{\"loss\": \"mse\", \"reduction\": \"sum\"}");
    cr_assert_eq(lk_loss_reduction(loss), LK_REDUCTION_SUM);
    lk_loss_free(loss);
    loss = build("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"l1\"}]}");
    cr_assert_eq(lk_loss_reduction(loss), LK_REDUCTION_MEAN);
    lk_loss_free(loss);
}

/* Reduction none with an output tensor: the per-position losses. */
static void eval_none(const char *json, double *x, double *t, double *out)
{
    lk_loss *loss = build(json);
    cr_assert_eq(lk_loss_reduction(loss), LK_REDUCTION_NONE);
    lk_named_tensor in[2] = {
        {"input", f64_tensor(x), "x"},
        {"target", f64_tensor(t), "t"},
    };
    lk_tensor o = f64_tensor(out);
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 2;
    args.out = &o;
    for (int i = 0; i < N; i++)
        out[i] = NAN;
    double v = 0.0;
    lk_status st = lk_loss_eval(loss, &args, &v);
    cr_assert_eq(st, LK_OK, "%s: %s: %s", json, lk_status_name(st), args.errmsg);
    cr_assert(isnan(v), "reduction none gives value %g, not NaN", v);
    lk_loss_free(loss);
}

/* Integer, boolean and list defaults, compared position by position. */
Test(config_fx, defaults_are_filled_in)
{
    double x[N], t[N], implicit[N], written[N], other[N];
    make_data(x, t);
    eval_none("{\"loss\": \"fx_count\", \"reduction\": \"none\"}", x, t, implicit);
    eval_none("{\"loss\": \"fx_count\", \"params\": {\"ignore_index\": -100, "
              "\"squared\": true, \"weights\": [1]}, \"reduction\": \"none\"}",
              x, t, written);
    eval_none("{\"loss\": \"fx_count\", \"params\": {\"squared\": false}, "
              "\"reduction\": \"none\"}",
              x, t, other);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        double d = x[i] - t[i];
        cr_assert_eq(implicit[i], written[i], "[%d]: defaults %.17g, written out %.17g", i,
                     implicit[i], written[i]);
        cr_assert(close_to(implicit[i], d * d, 1e-12), "[%d]: %.17g, by hand %.17g", i, implicit[i],
                  d * d);
        differ += fabs(other[i] - implicit[i]) > 1e-9;
    }
    cr_assert_gt(differ, 0, "squared false changes nothing");
}

/* The ABI promises kernels a non-NULL blk->out whose data is NULL when the
 * reduction is not none; fx_good relies on it. */
Test(config_fx, fixture_loss_evaluates_with_reduction_mean)
{
    double x[N], t[N];
    make_data(x, t);
    double v = eval_json("{\"loss\": \"fx_count\"}", x, t, NULL);
    double expect = 0.0;
    for (int i = 0; i < N; i++)
        expect += (x[i] - t[i]) * (x[i] - t[i]);
    expect /= N;
    cr_assert(close_to(v, expect, 1e-12), "fx_count %.17g, by hand %.17g", v, expect);
}

Test(config, weighted_sum_value_and_gradient)
{
    double x[N], t[N], g_sum[N], g_bce[N], g_dice[N];
    make_data(x, t);
    double v_bce = eval_json("{\"loss\": \"bce_with_logits\"}", x, t, g_bce);
    double v_dice = eval_json("{\"loss\": \"dice\"}", x, t, g_dice);
    lk_loss *sum = build("{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.5}, "
                         "{\"loss\": \"dice\", \"weight\": 0.5}], \"reduction\": \"mean\"}");
    double v_sum = eval(sum, x, t, g_sum);
    double want = 0.5 * v_bce + 0.5 * v_dice;
    cr_assert(close_to(v_sum, want, 1e-12), "sum %.17g, 0.5 bce + 0.5 dice = %.17g", v_sum, want);
    for (int i = 0; i < N; i++) {
        double gw = 0.5 * g_bce[i] + 0.5 * g_dice[i];
        cr_assert(close_to(g_sum[i], gw, 1e-12), "grad[%d]: sum %.17g, weighted terms %.17g", i,
                  g_sum[i], gw);
    }
    lk_loss_free(sum);
}

Test(config, weighted_sum_with_unequal_weights)
{
    double x[N], t[N], g_sum[N], g_mse[N], g_focal[N];
    make_data(x, t);
    double v_mse = eval_json("{\"loss\": \"mse\", \"reduction\": \"sum\"}", x, t, g_mse);
    double v_focal = eval_json("{\"loss\": \"focal\", \"reduction\": \"sum\"}", x, t, g_focal);
    lk_loss *sum = build("{\"terms\": [{\"loss\": \"mse\", \"weight\": 2}, "
                         "{\"loss\": \"focal\", \"weight\": -0.25}], \"reduction\": \"sum\"}");
    cr_assert_str_eq(lk_loss_name(sum), "2*mse + -0.25*focal");
    double v_sum = eval(sum, x, t, g_sum);
    double want = 2.0 * v_mse - 0.25 * v_focal;
    cr_assert(close_to(v_sum, want, 1e-12), "sum %.17g, want %.17g", v_sum, want);
    for (int i = 0; i < N; i++) {
        double gw = 2.0 * g_mse[i] - 0.25 * g_focal[i];
        cr_assert(close_to(g_sum[i], gw, 1e-12), "grad[%d]: %.17g, want %.17g", i, g_sum[i], gw);
    }
    lk_loss_free(sum);
}

Test(config, name_of_a_sum)
{
    lk_loss *loss = build("{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 0.5}, "
                          "{\"loss\": \"dice\", \"weight\": 0.5}]}");
    cr_assert_str_eq(lk_loss_name(loss), "0.5*bce_with_logits + 0.5*dice");
    lk_loss_free(loss);
    loss = build("{\"terms\": [{\"loss\": \"mse\", \"weight\": 3}, {\"loss\": \"l1\", "
                 "\"weight\": 0.25}, {\"loss\": \"focal\"}]}");
    cr_assert_str_eq(lk_loss_name(loss), "3*mse + 0.25*l1 + 1*focal");
    lk_loss_free(loss);
    loss = build("{\"loss\": \"focal\", \"params\": {\"gamma\": 1}}");
    cr_assert_str_eq(lk_loss_name(loss), "focal");
    lk_loss_free(loss);
}

Test(config, slot_union_of_a_sum)
{
    lk_loss *loss = build("{\"terms\": [{\"loss\": \"dice\"}, {\"loss\": \"bce_with_logits\"}]}");
    cr_assert_eq(lk_loss_slot_count(loss), 3);
    static const char *const names[] = {"input", "target", "weight"};
    static const int32_t req[] = {1, 1, 0};
    static const int32_t diff[] = {1, 0, 0};
    for (size_t i = 0; i < 3; i++) {
        const lk_slot_desc *d = NULL;
        int32_t r = -1, df = -1;
        cr_assert_eq(lk_loss_slot_at(loss, i, &d, &r, &df), LK_OK);
        cr_assert_not_null(d);
        cr_assert_str_eq(d->name, names[i], "slot %zu is %s, want %s", i, d->name, names[i]);
        cr_assert_eq(r, req[i], "slot %s: required %d", names[i], r);
        cr_assert_eq(df, diff[i], "slot %s: differentiable %d", names[i], df);
    }
    cr_assert_eq(lk_loss_slot_at(loss, 3, NULL, NULL, NULL), LK_ERR_NOT_FOUND);
    lk_loss_free(loss);

    /* a single loss: its own slots */
    loss = build("{\"loss\": \"dice\"}");
    cr_assert_eq(lk_loss_slot_count(loss), 2);
    lk_loss_free(loss);
}

Test(config_fx, slot_union_takes_requirement_from_any_term)
{
    /* fx_sq has input only; fx_count adds a required target */
    lk_loss *loss = build("{\"terms\": [{\"loss\": \"fx_sq\"}, {\"loss\": \"fx_count\"}], "
                          "\"reduction\": \"sum\"}");
    cr_assert_eq(lk_loss_slot_count(loss), 2);
    const lk_slot_desc *d = NULL;
    int32_t r = -1, df = -1;
    cr_assert_eq(lk_loss_slot_at(loss, 0, &d, &r, &df), LK_OK);
    cr_assert_str_eq(d->name, "input");
    cr_assert_eq(r, 1);
    cr_assert_eq(df, 1);
    cr_assert_eq(lk_loss_slot_at(loss, 1, &d, &r, &df), LK_OK);
    cr_assert_str_eq(d->name, "target");
    cr_assert_eq(r, 1);
    cr_assert_eq(df, 0);
    lk_loss_free(loss);
}

Test(config, dice_bce_equals_its_terms)
{
    double x[N], t[N], g_one[N], g_terms[N];
    make_data(x, t);
    double one = eval_json("{\"loss\": \"dice_bce\"}", x, t, g_one);
    double terms = eval_json("{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 1}, "
                             "{\"loss\": \"dice\", \"weight\": 1}]}",
                             x, t, g_terms);
    cr_assert(fabs(one - terms) <= 1e-12, "dice_bce %.17g, bce + dice %.17g", one, terms);
    for (int i = 0; i < N; i++)
        cr_assert(fabs(g_one[i] - g_terms[i]) <= 1e-12, "grad[%d]: dice_bce %.17g, terms %.17g", i,
                  g_one[i], g_terms[i]);
}

Test(config, loss_from_file_names_the_file)
{
    lk_loss *loss = NULL;
    char msg[LK_ERRMSG_CAP] = "";
    const char *path = LK_SOURCE_ROOT "/tests/cli/bad_gamma.json";
    cr_assert_eq(lk_loss_from_file(rt, path, &loss, msg), LK_ERR_CONFIG, "%s", msg);
    cr_assert_null(loss);
    cr_assert(strncmp(msg, path, strlen(path)) == 0, "message: %s", msg);
    cr_assert(strstr(msg, ": $.params.gamma: ") != NULL, "message: %s", msg);
    cr_assert_null(strchr(msg, '\n'), "message: %s", msg);
}

/* The traffic `losskit bench` counts: a fused loss reads its inputs once, a
 * two-pass one twice with backward, and each further term of a sum reads
 * the inputs again and the gradient as well. */
Test(config, traffic_counts_passes_and_terms)
{
    static const struct {
        const char *json;
        int32_t reads_fwd, reads_fb, grads_fb;
    } cases[] = {
        {"{\"loss\": \"mse\"}", 1, 1, 1},
        {"{\"loss\": \"focal\"}", 1, 1, 1},
        {"{\"loss\": \"dice\"}", 1, 2, 1},
        {"{\"loss\": \"dice_bce\"}", 1, 2, 1},
        {"{\"terms\": [{\"loss\": \"bce_with_logits\", \"weight\": 1}, "
         "{\"loss\": \"dice\", \"weight\": 1}]}",
         2, 3, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lk_loss *loss = build(cases[i].json);
        int32_t reads = -1, grads = -1;
        lk_loss_traffic(loss, 0, &reads, &grads);
        cr_expect_eq(reads, cases[i].reads_fwd, "%s: forward reads %d", cases[i].json, reads);
        cr_expect_eq(grads, 0, "%s: forward gradient accesses %d", cases[i].json, grads);
        lk_loss_traffic(loss, 1, &reads, &grads);
        cr_expect_eq(reads, cases[i].reads_fb, "%s: forward+backward reads %d", cases[i].json,
                     reads);
        cr_expect_eq(grads, cases[i].grads_fb, "%s: gradient accesses %d", cases[i].json, grads);
        lk_loss_free(loss);
    }
}

/* ------------------------------------------------------------------------ */
/* "tensors": a term's slots bound to other call tensors (deep supervision) */

Test(config, tensors_not_an_object)
{
    expect_error("{\"terms\": [{\"loss\": \"dice\", \"tensors\": [\"x\"]}]}",
                 SRC ": $.terms[0].tensors: ",
                 "expected an object mapping slot names to tensor names, got an array", NULL);
}

Test(config, tensors_unknown_slot_suggests_closest)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"dice\", \"tensors\": "
                 "{\"inptu\": \"logits_x2\"}}]}",
                 SRC ": $.terms[1].tensors: ", "unknown slot 'inptu' for loss 'dice'",
                 "did you mean 'input'?", "(slots: input, target)", NULL);
}

Test(config, tensors_value_not_a_string)
{
    expect_error("{\"terms\": [{\"loss\": \"dice\", \"tensors\": {\"input\": 3}}]}",
                 SRC ": $.terms[0].tensors.input: ",
                 "expected a tensor name (a string), got a number", NULL);
}

Test(config, tensors_name_must_be_lowercase_digits_underscore)
{
    static const char *const bad[] = {"Logits", "logits-2", "", "a b", "x.npy"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[256], needle[64];
        snprintf(json, sizeof json,
                 "{\"terms\": [{\"loss\": \"dice\", \"tensors\": {\"target\": \"%s\"}}]}", bad[i]);
        snprintf(needle, sizeof needle, "'%s' is not a valid tensor name", bad[i]);
        expect_error(json, SRC ": $.terms[0].tensors.target: ", needle, "a-z, 0-9 and '_'", NULL);
    }
    /* 65 characters: one too many */
    expect_error("{\"terms\": [{\"loss\": \"dice\", \"tensors\": {\"target\": "
                 "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}",
                 SRC ": $.terms[0].tensors.target: ", "is not a valid tensor name", NULL);
}

Test(config, tensors_duplicate_key)
{
    expect_error("{\"terms\": [{\"loss\": \"dice\", \"tensors\": {\"input\": \"a\", \"input\": "
                 "\"b\"}}]}",
                 SRC ": $.terms[0].tensors.input: ", "duplicate key 'input'", NULL);
}

Test(config, tensors_two_slots_of_a_term_cannot_share_a_tensor)
{
    /* target keeps its own name, which input is bound to */
    expect_error("{\"terms\": [{\"loss\": \"mse\", \"tensors\": {\"input\": \"target\"}}]}",
                 SRC ": $.terms[0].tensors: ",
                 "slots 'input' and 'target' of loss 'mse' both read tensor 'target'", NULL);
    expect_error("{\"loss\": \"mse\", \"tensors\": {\"input\": \"a\", \"target\": \"a\"}}",
                 SRC ": $.tensors: ", "both read tensor 'a'", NULL);
}

Test(config, tensors_gradient_roles_must_agree)
{
    /* l1's target has no gradient; mse's input has one: input's gradient
     * would leave the l1 term out */
    expect_error("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"l1\", \"tensors\": "
                 "{\"input\": \"z\", \"target\": \"input\"}}]}",
                 SRC ": $.terms[1].tensors.target: ",
                 "tensor 'input' is read by slot 'target' of loss 'l1' (no gradient)",
                 "slot 'input' of loss 'mse' in $.terms[0] (differentiable)", NULL);
}

Test(config, tensors_at_the_root_only_with_loss)
{
    expect_error("{\"terms\": [{\"loss\": \"mse\"}], \"tensors\": {\"input\": \"x\"}}",
                 SRC ": $: ", "not both", NULL);
    expect_error("{\"loss\": \"mse\", \"tensors\": {\"inptu\": \"x\"}}",
                 SRC ": $.tensors: ", "unknown slot 'inptu'", "did you mean 'input'?", NULL);
}

/* The loss's tensors are the union over terms, under their bound names, in
 * the order first met; a binding to the slot's own name changes nothing. */
Test(config, tensors_names_are_the_loss_slots)
{
    lk_loss *loss = build("{\"terms\": [{\"loss\": \"dice\", \"tensors\": {\"target\": "
                          "\"target\"}}, {\"loss\": \"dice\", \"weight\": 0.5, \"tensors\": "
                          "{\"input\": \"logits_x2\", \"target\": \"mask_x2\"}}, "
                          "{\"loss\": \"bce_with_logits\", \"tensors\": {\"target\": "
                          "\"mask_x2\", \"input\": \"logits_x2\"}}]}");
    static const char *const names[] = {"input", "target", "logits_x2", "mask_x2", "weight"};
    static const int32_t req[] = {1, 1, 1, 1, 0};
    static const int32_t diff[] = {1, 0, 1, 0, 0};
    cr_assert_eq(lk_loss_slot_count(loss), 5);
    for (size_t i = 0; i < 5; i++) {
        const lk_slot_desc *d = NULL;
        int32_t r = -1, df = -1;
        cr_assert_eq(lk_loss_slot_at(loss, i, &d, &r, &df), LK_OK);
        cr_assert_str_eq(d->name, names[i], "slot %zu is %s, want %s", i, d->name, names[i]);
        cr_assert_eq(r, req[i], "slot %s: required %d", names[i], r);
        cr_assert_eq(df, diff[i], "slot %s: differentiable %d", names[i], df);
    }
    /* the binding keeps the slot's description: logits_x2 is a dice input */
    const lk_slot_desc *d = NULL;
    lk_loss_slot_at(loss, 2, &d, NULL, NULL);
    cr_assert(d->flags & LK_SLOT_DIFFERENTIABLE);
    /* each term's slots, by the tensor they read */
    cr_assert_str_eq(lk_loss_term_tensor(loss, 0, 0), "input");
    cr_assert_str_eq(lk_loss_term_tensor(loss, 0, 1), "target");
    cr_assert_str_eq(lk_loss_term_tensor(loss, 1, 0), "logits_x2");
    cr_assert_str_eq(lk_loss_term_tensor(loss, 2, 1), "mask_x2");
    cr_assert_str_eq(lk_loss_term_tensor(loss, 2, 2), "weight");
    cr_assert_null(lk_loss_term_tensor(loss, 2, 3));
    cr_assert_null(lk_loss_term_tensor(loss, 3, 0));
    lk_loss_free(loss);

    loss = build("{\"loss\": \"mse\", \"tensors\": {\"input\": \"pred\"}}");
    cr_assert_eq(lk_loss_slot_count(loss), 3);
    lk_loss_slot_at(loss, 0, &d, NULL, NULL);
    cr_assert_str_eq(d->name, "pred");
    cr_assert_str_eq(lk_loss_name(loss), "mse");
    lk_loss_free(loss);
}

#define N2 12
static const int64_t shape2[2] = {2, 6};

/* A tensor of N doubles shaped (2,3,4), or of N2 shaped (2,6). */
static lk_named_tensor named(const char *name, double *data, int small)
{
    lk_named_tensor nt = {
        name, {data, LK_DTYPE_F64, small ? 2 : 3, small ? shape2 : shape3, NULL}, name};
    return nt;
}

/* Evaluates loss on n tensors, asking for the gradients of the first n_g of
 * grads (each filled with NaN first: they must be entirely overwritten). */
static lk_status eval_named(const lk_loss *loss, const lk_named_tensor *ts, size_t n,
                            lk_named_tensor *grads, size_t n_g, double *value, char *err)
{
    for (size_t i = 0; i < n_g; i++) {
        int64_t cnt = grads[i].tensor.ndim == 2 ? N2 : N;
        for (int64_t k = 0; k < cnt; k++)
            ((double *)grads[i].tensor.data)[k] = NAN;
    }
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = ts;
    args.n_tensors = n;
    args.grads = grads;
    args.n_grads = n_g;
    *value = NAN;
    lk_status st = lk_loss_eval(loss, &args, value);
    snprintf(err, LK_ERRMSG_CAP, "%s", args.errmsg);
    return st;
}

/* Deep supervision: the weighted sum equals the terms evaluated one by one
 * on their own tensors, and each head's gradient is its own term's. */
Test(config, tensors_deep_supervision_equals_separate_terms)
{
    double x[N], t[N], x2[N2], t2[N2], g_x[N], g_x2[N2], g1[N], g2[N2];
    make_data(x, t);
    for (int i = 0; i < N2; i++) {
        x2[i] = 2.0 * cos(0.9 * i + 0.4);
        t2[i] = i % 2 ? 1.0 : 0.0;
    }
    char err[LK_ERRMSG_CAP];
    double v1, v2, v;
    /* each term alone, under the slot names */
    lk_loss *one = build("{\"loss\": \"dice\", \"params\": {\"smooth\": 1}}");
    lk_named_tensor a[2] = {named("input", x, 0), named("target", t, 0)};
    lk_named_tensor ga[1] = {named("input", g1, 0)};
    cr_assert_eq(eval_named(one, a, 2, ga, 1, &v1, err), LK_OK, "%s", err);
    lk_named_tensor b[2] = {named("input", x2, 1), named("target", t2, 1)};
    lk_named_tensor gb[1] = {named("input", g2, 1)};
    cr_assert_eq(eval_named(one, b, 2, gb, 1, &v2, err), LK_OK, "%s", err);
    lk_loss_free(one);

    lk_loss *ds = build("{\"terms\": [{\"loss\": \"dice\", \"weight\": 1.0, \"params\": "
                        "{\"smooth\": 1}}, {\"loss\": \"dice\", \"weight\": 0.5, \"params\": "
                        "{\"smooth\": 1}, \"tensors\": {\"input\": \"logits_x2\", \"target\": "
                        "\"mask_x2\"}}]}");
    cr_assert_str_eq(lk_loss_name(ds), "1*dice + 0.5*dice");
    lk_named_tensor all[4] = {named("input", x, 0), named("target", t, 0),
                              named("logits_x2", x2, 1), named("mask_x2", t2, 1)};
    lk_named_tensor gall[2] = {named("input", g_x, 0), named("logits_x2", g_x2, 1)};
    cr_assert_eq(eval_named(ds, all, 4, gall, 2, &v, err), LK_OK, "%s", err);
    cr_assert(v1 != v2, "the two scales must differ for the test to mean anything");
    /* the engine adds the terms in order from 0: the same doubles */
    double want = 0.0;
    want += 1.0 * v1;
    want += 0.5 * v2;
    cr_assert_eq(v, want, "sum %.17g, want %.17g + 0.5 * %.17g", v, v1, v2);
    for (int i = 0; i < N; i++)
        cr_assert_eq(g_x[i], g1[i], "input grad[%d]: %.17g, alone %.17g", i, g_x[i], g1[i]);
    for (int i = 0; i < N2; i++)
        cr_assert(close_to(g_x2[i], 0.5 * g2[i], 1e-15), "logits_x2 grad[%d]: %.17g, want %.17g", i,
                  g_x2[i], 0.5 * g2[i]);

    /* a missing tensor names the term and the slot */
    cr_assert_eq(eval_named(ds, all, 3, NULL, 0, &v, err), LK_ERR_NOT_FOUND);
    cr_assert(strstr(err, "loss 'dice' ($.terms[1]): missing tensor 'mask_x2' for slot 'target'"),
              "%s", err);
    cr_assert(isnan(v));
    /* a tensor no term reads is refused with the loss's tensor names */
    lk_named_tensor extra[5] = {all[0], all[1], all[2], all[3], named("mask_x4", t2, 1)};
    cr_assert_eq(eval_named(ds, extra, 5, NULL, 0, &v, err), LK_ERR_NOT_FOUND);
    cr_assert(strstr(err, "'mask_x4' is not a tensor slot of 1*dice + 0.5*dice (slots: input, "
                          "target, logits_x2, mask_x2)"),
              "%s", err);
    lk_loss_free(ds);
}

/* A weighted sum may name one loss twice: a term's plan, shape or kernel
 * refusal names its term, even where its slots are not bound elsewhere. */
Test(config, term_errors_name_their_term)
{
    double x[N], t[N];
    make_data(x, t);
    char err[LK_ERRMSG_CAP];
    double v;
    lk_named_tensor ts[2] = {named("input", x, 0), named("target", t, 0)};
    /* plan: the second term's class 5 of 3 (input (2, 3, 4)) */
    lk_loss *two = build("{\"terms\": [{\"loss\": \"dice\", \"params\": {\"mode\": "
                         "\"multilabel\"}}, {\"loss\": \"dice\", \"weight\": 0.5, \"params\": "
                         "{\"mode\": \"multilabel\", \"classes\": [5]}}]}");
    cr_assert_neq(eval_named(two, ts, 2, NULL, 0, &v, err), LK_OK);
    cr_assert(strstr(err, "loss 'dice' ($.terms[1]): classes[0] = 5"), "%s", err);
    lk_loss_free(two);
    /* kernel: a target outside [0, 1], which both terms read; the first
     * term to run refuses it */
    t[5] = 2.0;
    lk_loss *sum = build("{\"terms\": [{\"loss\": \"mse\"}, {\"loss\": \"bce\"}]}");
    cr_assert_neq(eval_named(sum, ts, 2, NULL, 0, &v, err), LK_OK);
    cr_assert(strstr(err, "loss 'bce' ($.terms[1]): "), "%s", err);
    lk_loss_free(sum);
    /* a single loss's messages carry no term */
    lk_loss *one = build("{\"loss\": \"bce\"}");
    cr_assert_neq(eval_named(one, ts, 2, NULL, 0, &v, err), LK_OK);
    cr_assert(strstr(err, "loss 'bce': ") && !strstr(err, "$.terms"), "%s", err);
    lk_loss_free(one);
}

/* Two terms reading one tensor: its gradient is the sum of both terms'
 * (the second adds into the first's with LK_BLOCK_GRAD_ACCUMULATE), while
 * a tensor one term reads gets that term's alone. */
Test(config, tensors_shared_tensor_gradients_accumulate)
{
    double x[N], t[N], aux[N], g_mse[N], g_l1[N], g_sum[N];
    make_data(x, t);
    for (int i = 0; i < N; i++)
        aux[i] = 0.5 * sin(2.1 * i);
    char err[LK_ERRMSG_CAP];
    double v_mse, v_l1, v;
    lk_loss *mse = build("{\"loss\": \"mse\", \"reduction\": \"sum\"}");
    lk_loss *l1 = build("{\"loss\": \"l1\", \"reduction\": \"sum\"}");
    lk_named_tensor a[2] = {named("input", x, 0), named("target", t, 0)};
    lk_named_tensor b[2] = {named("input", x, 0), named("target", aux, 0)};
    lk_named_tensor ga[1] = {named("input", g_mse, 0)};
    lk_named_tensor gb[1] = {named("input", g_l1, 0)};
    cr_assert_eq(eval_named(mse, a, 2, ga, 1, &v_mse, err), LK_OK, "%s", err);
    cr_assert_eq(eval_named(l1, b, 2, gb, 1, &v_l1, err), LK_OK, "%s", err);
    lk_loss_free(mse);
    lk_loss_free(l1);

    lk_loss *sum = build("{\"terms\": [{\"loss\": \"mse\", \"weight\": 2}, {\"loss\": \"l1\", "
                         "\"weight\": 0.5, \"tensors\": {\"target\": \"aux\"}}], "
                         "\"reduction\": \"sum\"}");
    lk_named_tensor all[3] = {named("input", x, 0), named("target", t, 0), named("aux", aux, 0)};
    lk_named_tensor g[1] = {named("input", g_sum, 0)};
    cr_assert_eq(eval_named(sum, all, 3, g, 1, &v, err), LK_OK, "%s", err);
    cr_assert(close_to(v, 2.0 * v_mse + 0.5 * v_l1, 1e-14), "%.17g, want %.17g", v,
              2.0 * v_mse + 0.5 * v_l1);
    for (int i = 0; i < N; i++) {
        double want = 2.0 * g_mse[i] + 0.5 * g_l1[i];
        cr_assert(close_to(g_sum[i], want, 1e-14), "grad[%d]: %.17g, want %.17g", i, g_sum[i],
                  want);
        cr_assert(g_l1[i] != 0.0 && g_mse[i] != 0.0, "grad[%d]: a term contributes nothing", i);
    }
    lk_loss_free(sum);
}

/* ------------------------------------------------------------------------ */
/* focal's modes and bce_with_logits' options                                */

Test(config, focal_mode_options_refused_outside_their_mode)
{
    expect_error(
        "{\"loss\": \"focal\", \"params\": {\"class_weights\": [1, 2]}}", SRC ": $.params: ",
        "class_weights applies to mode \"multilabel\" only (the mode is \"binary\")", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", "
                 "\"include_background\": false}}",
                 SRC ": $.params: ", "include_background applies to mode \"multilabel\" only",
                 NULL);
    expect_error(
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\", \"ignore_index\": 1}}",
        SRC ": $.params: ", "ignore_index applies to mode \"multiclass\" only", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"alpha\": [0.25, 0.75]}}",
                 SRC ": $.params: ", "alpha has 2 values; mode \"binary\" takes one", NULL);
    expect_error(
        "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", \"alpha\": [1, -0.5]}}",
        SRC ": $.params: ", "alpha[1] = -0.5", ">= 0", NULL);
    expect_error("{\"loss\": \"focal\", \"params\": {\"mode\": \"multi\"}}",
                 SRC ": $.params.mode: ", NULL);
    expect_error("{\"loss\": \"bce_with_logits\", \"params\": {\"label_smoothing\": 1.5}}",
                 SRC ": $.params.label_smoothing: ", "out of range [0, 1]", NULL);
}

/* Evaluates json on (x: float64 xshape, t: float64 or int64 tshape) and
 * returns the status, the message in msg. */
static lk_status eval_mode(const char *json, double *x, int32_t xn, const int64_t *xs, void *t,
                           int32_t tdtype, int32_t tn, const int64_t *ts, double *grad,
                           double *value, char *msg)
{
    lk_loss *loss = build(json);
    lk_named_tensor in[2] = {{"input", {x, LK_DTYPE_F64, xn, xs, NULL}, "x"},
                             {"target", {t, tdtype, tn, ts, NULL}, "t"}};
    lk_named_tensor g[1] = {{"input", {grad, LK_DTYPE_F64, xn, xs, NULL}, "g"}};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 2;
    if (grad) {
        args.grads = g;
        args.n_grads = 1;
    }
    *value = NAN;
    lk_status st = lk_loss_eval(loss, &args, value);
    snprintf(msg, LK_ERRMSG_CAP, "%s", args.errmsg);
    lk_loss_free(loss);
    return st;
}

Test(config, focal_multiclass_targets_checked)
{
    double x[24], g[24], v;
    int64_t y[6] = {0, 1, 2, 3, 1, 0};
    const int64_t xs[3] = {2, 4, 3}, ys[2] = {2, 3};
    char msg[LK_ERRMSG_CAP];
    for (int i = 0; i < 24; i++)
        x[i] = sin(0.9 * i);
    const char *mc = "{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\"}}";
    cr_assert_eq(eval_mode(mc, x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg), LK_OK, "%s", msg);
    cr_assert(isfinite(v) && v > 0.0);
    y[4] = 4; /* not a class, and no ignore_index */
    cr_assert_eq(eval_mode(mc, x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg), LK_ERR_INVALID);
    cr_assert(
        strstr(msg, "target[1, 1] (t) = 4 is not a class index in [0, 4) (no ignore_index is set)"),
        "%s", msg);
    y[4] = -100; /* -100 is not ignored unless asked for */
    cr_assert_eq(eval_mode(mc, x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg), LK_ERR_INVALID);
    y[4] = INT64_MIN; /* nor the class driver's stand-in for "no ignore_index" */
    cr_assert_eq(eval_mode(mc, x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "target[1, 1] (t) = -9223372036854775808 is not a class index in [0, 4)"),
              "%s", msg);
    cr_assert_eq(eval_mode("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", "
                           "\"alpha\": [1, 2, 3]}}",
                           x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg),
                 LK_ERR_SHAPE);
    cr_assert(strstr(msg, "alpha has 3 values but the input has 4 classes"), "%s", msg);
    double tf[6] = {0};
    cr_assert_eq(eval_mode(mc, x, 3, xs, tf, LK_DTYPE_F64, 2, ys, g, &v, msg), LK_ERR_DTYPE);
    cr_assert(strstr(msg, "takes int64 class indices"), "%s", msg);
    cr_assert_eq(eval_mode("{\"loss\": \"focal\"}", x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg),
                 LK_ERR_DTYPE);
    cr_assert(strstr(msg, "int64 class indices need mode \"multiclass\""), "%s", msg);

    /* every position ignored: 0, and a zero gradient */
    for (int i = 0; i < 6; i++)
        y[i] = 9;
    for (int i = 0; i < 24; i++)
        g[i] = NAN;
    cr_assert_eq(eval_mode("{\"loss\": \"focal\", \"params\": {\"mode\": \"multiclass\", "
                           "\"ignore_index\": 9}}",
                           x, 3, xs, y, LK_DTYPE_I64, 2, ys, g, &v, msg),
                 LK_OK, "%s", msg);
    cr_assert_eq(v, 0.0);
    for (int i = 0; i < 24; i++)
        cr_assert_eq(g[i], 0.0, "grad[%d] = %g", i, g[i]);
}

Test(config, focal_multilabel_shapes_checked)
{
    double x[24], t[24], g[24], v;
    const int64_t xs[3] = {2, 4, 3}, one[3] = {2, 1, 12};
    char msg[LK_ERRMSG_CAP];
    for (int i = 0; i < 24; i++)
        x[i] = sin(0.9 * i), t[i] = i % 2;
    cr_assert_eq(eval_mode("{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\", "
                           "\"class_weights\": [1, 2]}}",
                           x, 3, xs, t, LK_DTYPE_F64, 3, xs, g, &v, msg),
                 LK_ERR_SHAPE);
    cr_assert(strstr(msg, "class_weights has 2 values but the input has 4 channels"), "%s", msg);
    cr_assert_eq(eval_mode("{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\", "
                           "\"include_background\": false}}",
                           x, 3, one, t, LK_DTYPE_F64, 3, one, g, &v, msg),
                 LK_ERR_SHAPE);
    cr_assert(strstr(msg, "include_background false needs at least 2 channels"), "%s", msg);
    /* without its options, multilabel is binary mode exactly */
    double vb, gb[24];
    cr_assert_eq(eval_mode("{\"loss\": \"focal\", \"params\": {\"mode\": \"multilabel\"}}", x, 3,
                           xs, t, LK_DTYPE_F64, 3, xs, g, &v, msg),
                 LK_OK, "%s", msg);
    cr_assert_eq(eval_mode("{\"loss\": \"focal\"}", x, 3, xs, t, LK_DTYPE_F64, 3, xs, gb, &vb, msg),
                 LK_OK, "%s", msg);
    cr_assert_eq(v, vb);
    cr_assert_eq(memcmp(g, gb, sizeof g), 0);
}

/* The count of the targets not ignored (mean's divisor) runs four floats or
 * two doubles at a time with a scalar tail: lengths that leave a tail, a
 * target of 0.5 (counted), every third ignored, and a bad target in the
 * vectors' part or in the tail named by its index; float32 and float64. */
static lk_status bce_ig_eval(int f32, int64_t n, const double *xd, const double *td, double *value,
                             char *msg)
{
    void *x = malloc((size_t)n * 8), *t = malloc((size_t)n * 8);
    cr_assert(x && t);
    for (int64_t i = 0; i < n; i++) {
        if (f32)
            ((float *)x)[i] = (float)xd[i], ((float *)t)[i] = (float)td[i];
        else
            ((double *)x)[i] = xd[i], ((double *)t)[i] = td[i];
    }
    lk_loss *loss = build("{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": -100}}");
    const int64_t s[1] = {n};
    int32_t dt = f32 ? LK_DTYPE_F32 : LK_DTYPE_F64;
    lk_named_tensor in[2] = {{"input", {x, dt, 1, s, NULL}, "x"},
                             {"target", {t, dt, 1, s, NULL}, "t"}};
    lk_eval_args args;
    lk_eval_args_init(&args);
    args.tensors = in;
    args.n_tensors = 2;
    lk_status st = lk_loss_eval(loss, &args, value);
    snprintf(msg, LK_ERRMSG_CAP, "%s", args.errmsg);
    lk_loss_free(loss);
    free(x), free(t);
    return st;
}

Test(config, bce_ignore_index_count)
{
    enum { NMAX = 1003 };
    static double x[NMAX], t[NMAX];
    char msg[LK_ERRMSG_CAP];
    const int64_t lengths[4] = {1003, 1001, 8, 3};
    for (int f32 = 0; f32 < 2; f32++)
        for (int k = 0; k < 4; k++) {
            int64_t n = lengths[k], counted = 0;
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++) {
                x[i] = sin(0.37 * (double)i);
                if (f32)
                    x[i] = (float)x[i];
                t[i] = i % 3 == 0 ? -100.0 : i % 7 == 0 ? 0.5 : (double)(i % 2);
                if (t[i] != -100.0) {
                    counted++;
                    sum += fmax(x[i], 0.0) - x[i] * t[i] + log1p(exp(-fabs(x[i])));
                }
            }
            double v = NAN;
            cr_assert_eq(bce_ig_eval(f32, n, x, t, &v, msg), LK_OK, "%s", msg);
            double want = sum / (double)counted;
            cr_expect(fabs(v - want) <= (f32 ? 1e-6 : 1e-14) * want,
                      "%s, %lld elements: %.17g, want %.17g (%lld counted)",
                      f32 ? "float32" : "float64", (long long)n, v, want, (long long)counted);
            /* a bad target early (in the vectors) and in the last element (the tail where
             * n leaves one) */
            for (int w = 0; w < 2; w++) {
                int64_t at = w ? n - 1 : 1;
                double keep = t[at];
                t[at] = 2.0;
                char want_msg[96];
                snprintf(want_msg, sizeof want_msg,
                         "target[%lld] (t) = 2 is outside [0, 1] and not ignore_index -100",
                         (long long)at);
                cr_expect_eq(bce_ig_eval(f32, n, x, t, &v, msg), LK_ERR_INVALID,
                             "%s, %lld elements, bad at %lld", f32 ? "float32" : "float64",
                             (long long)n, (long long)at);
                cr_expect(strstr(msg, want_msg) != NULL, "%s: '%s' lacks '%s'",
                          f32 ? "float32" : "float64", msg, want_msg);
                t[at] = keep;
            }
        }
}

Test(config, bce_ignore_index)
{
    double x[24], t[24], g[24], v;
    const int64_t xs[3] = {2, 4, 3};
    char msg[LK_ERRMSG_CAP];
    for (int i = 0; i < 24; i++)
        x[i] = sin(0.9 * i), t[i] = i % 3 == 0 ? 255.0 : i % 2;
    const char *ig = "{\"loss\": \"bce_with_logits\", \"params\": {\"ignore_index\": 255}}";
    cr_assert_eq(eval_mode(ig, x, 3, xs, t, LK_DTYPE_F64, 3, xs, g, &v, msg), LK_OK, "%s", msg);
    /* the mean over the 16 elements counted, the ignored ones' gradient 0 */
    double sum = 0.0;
    for (int i = 0; i < 24; i++)
        if (i % 3)
            sum += fmax(x[i], 0.0) - x[i] * t[i] + log1p(exp(-fabs(x[i])));
        else
            cr_assert_eq(g[i], 0.0);
    cr_assert(close_to(v, sum / 16.0, 1e-14), "%.17g, want %.17g", v, sum / 16.0);
    t[4] = 2.0;
    cr_assert_eq(eval_mode(ig, x, 3, xs, t, LK_DTYPE_F64, 3, xs, g, &v, msg), LK_ERR_INVALID);
    cr_assert(strstr(msg, "target[0, 1, 1] (t) = 2 is outside [0, 1] and not ignore_index 255"),
              "%s", msg);
    /* without ignore_index, 255 is an invalid target as before */
    t[4] = 1.0;
    cr_assert_eq(
        eval_mode("{\"loss\": \"bce_with_logits\"}", x, 3, xs, t, LK_DTYPE_F64, 3, xs, g, &v, msg),
        LK_ERR_INVALID);
    cr_assert(strstr(msg, "target[0, 0, 0] (t) = 255 is outside [0, 1]"), "%s", msg);
}
