/* torch_losses.h: what the files of the torch family share. Private: nothing
 * here is exported (the family builds with -fvisibility=hidden).
 *
 * The family reproduces losses of torch.nn.functional exactly, conventions
 * included; README.md lists every formula and every edge case. */
#ifndef LOSSKIT_TORCH_LOSSES_H
#define LOSSKIT_TORCH_LOSSES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "losskit/kernel.h"
#include "losskit/plugin.h"

/* The losses (cross_entropy.c). */
extern const lk_loss_desc torch_cross_entropy_desc;

/* Refuses strided (non C-order) tensors. The host of ABI 1.0 already does,
 * but a kernel that walks memory by hand must not trust that blindly. */
lk_status torch_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg);

#endif /* LOSSKIT_TORCH_LOSSES_H */
