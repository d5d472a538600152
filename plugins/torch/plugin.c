/* plugin.c: the torch family's entry point and what its losses share. */
#include "torch_losses.h"

static const lk_loss_desc *const torch_losses[] = {
    &torch_cross_entropy_desc,
    NULL,
};

static const lk_plugin torch_plugin = {
    LK_ABI_MAJOR,
    LK_ABI_MINOR,
    "torch",
    "1.0.0",
    "losses of torch.nn.functional with PyTorch's exact semantics: cross_entropy",
    torch_losses,
};

LK_PLUGIN_ENTRY(torch_plugin)

static int is_c_order(const lk_tensor *t)
{
    if (!t->strides || !t->shape)
        return 1;
    int64_t expect = 1;
    for (int32_t d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 0)
            return 1;
        if (t->shape[d] != 1 && t->strides[d] != expect)
            return 0;
        expect *= t->shape[d];
    }
    return 1;
}

lk_status torch_check_layout(const lk_tensor *slots, int32_t n_slots, lk_msg *msg)
{
    for (int32_t s = 0; s < n_slots; s++)
        if (slots[s].data && !is_c_order(&slots[s]))
            return lk_fail(msg, LK_ERR_UNSUPPORTED,
                           "slot %d is strided; the torch losses need C-order tensors", (int)s);
    return LK_OK;
}
