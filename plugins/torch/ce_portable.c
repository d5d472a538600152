/* ce_portable.c: the cross-entropy kernels for any target, on GNU C vector
 * extensions (two double lanes; SSE2 pairs on x86-64). */
#include "ce_body.h"

const ce_kernels torch_ce_portable = {"portable", CE_W, ce_forward_any, ce_backward_any};
