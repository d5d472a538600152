/* mcc: 1 - MCC per (group, class), smp's MCCLoss: TP = I + eps, FP = P - I
 * + eps, FN = T - I + eps, TN = V - P - T + I + eps,
 * MCC = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)). */
#include "overlap.h"

static seg_d mcc_pair(const seg *o, seg_d I, seg_d P, double T, double V)
{
    seg_d tp = sd_addc(I, o->eps), fp = sd_addc(sd_sub(P, I), o->eps);
    seg_d fn = sd_addc(sd_sub(sd_c(T), I), o->eps);
    seg_d tn = sd_addc(sd_sub(I, P), V - T + o->eps);
    seg_d num = sd_sub(sd_mul(tp, tn), sd_mul(fp, fn));
    seg_d den = sd_mul(sd_mul(sd_add(tp, fp), sd_add(tp, fn)), sd_mul(sd_add(tn, fp), sd_add(tn, fn)));
    if (isnan(den.v)) { /* a NaN input */
        seg_d r = {den.v, den.v, den.v};
        return r;
    }
    if (!(den.v > 0.0))
        return sd_c(1.0); /* eps 0 and a degenerate class: MCC taken as 0 */
    return sd_sub(sd_c(1.0), sd_div(num, sd_sqrt(den)));
}

static const seg_kind mcc_kind = {.pair = mcc_pair, .no_multiclass = 1, .double_lanes = 1};

static const lk_param_desc *const mcc_params[] LK__UNUSED = {
    &seg_p_mode, &seg_p_ignore_index, &seg_p_from_logits, &seg_p_eps_mcc, &seg_p_classes,
    &seg_p_include_background, &seg_p_class_weights, &seg_p_per_sample, NULL};

SEG_LOSS(mcc, mcc_kind, mcc_params,
         .summary = "Matthews correlation loss 1 - MCC from soft TP, TN, FP, FN; binary and "
                    "multilabel modes",
         .version = "1.0.0")
