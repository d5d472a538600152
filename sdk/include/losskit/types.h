/* losskit/types.h: the types shared by plugins and embedding applications.
 *
 * Both public headers (losskit/plugin.h for plugin authors, losskit/losskit.h
 * for applications) include this one; nobody needs to include it directly.
 * Everything here is part of ABI 1.x and only ever grows at the end. */
#ifndef LOSSKIT_TYPES_H
#define LOSSKIT_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: 0 is success, every failure is negative. The runtime's
 * lk_status_name() and lk_status_text() name and describe them. */
typedef enum lk_status {
    LK_OK = 0,
    LK_ERR_INVALID = -1,     /* a bad argument, parameter or shape */
    LK_ERR_NOMEM = -2,       /* an allocation failed */
    LK_ERR_DTYPE = -3,       /* a tensor has a dtype the slot does not accept */
    LK_ERR_SHAPE = -4,       /* a tensor's shape does not fit the loss */
    LK_ERR_UNSUPPORTED = -5, /* a reduction or mode the loss does not offer */
    LK_ERR_NUMERIC = -6,     /* a value the loss cannot evaluate (documented) */
    LK_ERR_IO = -7,          /* a file could not be read or written */
    LK_ERR_FORMAT = -8,      /* a file's content is malformed */
    LK_ERR_CONFIG = -9,      /* a config does not validate */
    LK_ERR_NOT_FOUND = -10,  /* a loss id, slot or file does not exist */
    LK_ERR_LOAD = -11,       /* a plugin could not be loaded */
    LK_ERR_VERSION = -12,    /* a plugin's ABI major differs from the host's */
    LK_ERR_INTERNAL = -13    /* a bug: please report it */
} lk_status;

/* Element types. Values are stable; a slot's accepted set is a bit mask of
 * LK_DTYPE_BIT(dtype). */
typedef enum lk_dtype {
    LK_DTYPE_INVALID = 0,
    LK_DTYPE_F32 = 1,
    LK_DTYPE_F64 = 2,
    LK_DTYPE_I64 = 3,
    LK_DTYPE_I32 = 4,
    LK_DTYPE_U8 = 5,
    LK_DTYPE_BOOL = 6
} lk_dtype;

#define LK_DTYPE_BIT(d) (1u << (unsigned)(d))
#define LK_DTYPES_FLOAT (LK_DTYPE_BIT(LK_DTYPE_F32) | LK_DTYPE_BIT(LK_DTYPE_F64))
#define LK_DTYPES_INT (LK_DTYPE_BIT(LK_DTYPE_I64) | LK_DTYPE_BIT(LK_DTYPE_I32))

#define LK_MAX_NDIM 16

/* A tensor description in the manner of DLPack's DLTensor: nothing is copied.
 * shape and strides point at ndim values each; strides are in elements, not
 * bytes. The memory behind data, shape and strides belongs to whoever built
 * the description and must stay valid for the duration of the call it is
 * passed to. Inputs are read-only even though data is not const-qualified:
 * a loss that writes into an input slot is broken. Frozen: tensors travel
 * in arrays (lk_block.slots), so this struct never grows. */
typedef struct lk_tensor {
    void *data;             /* NULL for an absent optional slot */
    int32_t dtype;          /* an lk_dtype */
    int32_t ndim;           /* 0 ..= LK_MAX_NDIM; 0 is a scalar */
    const int64_t *shape;   /* ndim sizes, each >= 0 */
    const int64_t *strides; /* ndim strides in elements; NULL means C order */
} lk_tensor;

/* Reductions. A loss declares the set it offers as a mask of
 * LK_REDUCTION_BIT(r). */
typedef enum lk_reduction {
    LK_REDUCTION_NONE = 0,     /* one loss value per position */
    LK_REDUCTION_MEAN = 1,     /* the loss's own mean (documented per loss) */
    LK_REDUCTION_SUM = 2,      /* the sum of the per-position losses */
    LK_REDUCTION_BATCHMEAN = 3 /* the sum divided by the batch size (dim 0) */
} lk_reduction;

#define LK_REDUCTION_BIT(r) (1u << (unsigned)(r))
#define LK_REDUCTION_COUNT 4

#ifdef __cplusplus
}
#endif

#endif /* LOSSKIT_TYPES_H */
