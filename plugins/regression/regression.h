/* regression.h: what the regression family's losses share: their slots.
 * Private to the family. */
#ifndef LOSSKIT_REGRESSION_H
#define LOSSKIT_REGRESSION_H

#include "losskit/loss.h"

static const lk_slot_desc reg_input LK__UNUSED = {
    .name = "input",
    .doc = "predictions, any shape",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_DIFFERENTIABLE,
    .shape = LK_SHAPE_ANY,
    .values = LK_VALUES_REAL,
};
static const lk_slot_desc reg_target LK__UNUSED = {
    .name = "target",
    .doc = "targets of any value, shaped like input (not differentiable)",
    .dtypes = LK_DTYPES_FLOAT,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_REAL,
};
/* torch has no weight for these losses: a losskit extension. */
static const lk_slot_desc reg_weight LK__UNUSED = {
    .name = "weight",
    .doc = "optional per-element weight multiplying loss and gradient (a losskit extension)",
    .dtypes = LK_DTYPES_FLOAT,
    .flags = LK_SLOT_OPTIONAL,
    .shape = LK_SHAPE_LIKE_INPUT,
    .values = LK_VALUES_POSITIVE,
};
static const lk_slot_desc *const reg_slots[] LK__UNUSED = {&reg_input, &reg_target, &reg_weight,
                                                           NULL};

#endif /* LOSSKIT_REGRESSION_H */
