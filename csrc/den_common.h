/* den_common.h: status codes and small helpers shared by every C module.
 *
 * Rules for the whole C core (see DESIGN.md):
 *  - kernels never include Python.h; only csrc/module.c does;
 *  - every function that can fail returns a den_status; nothing here exits, aborts or prints;
 *  - sizes that multiply (samples x features, rows x columns) are int64_t; sizes handed to BLAS
 *    are checked to fit in int before the call (den_fits_int).
 */
#ifndef DEN_COMMON_H
#define DEN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <limits.h>

typedef enum {
    DEN_OK = 0,
    DEN_ENOMEM = 1,      /* an allocation failed */
    DEN_EINVAL = 2,      /* an argument is out of range or inconsistent */
    DEN_EINTR = 3,       /* the poll callback asked training to stop (Ctrl-C) */
    DEN_ENONFINITE = 4,  /* training produced NaN/inf (diverged): lower the learning rate */
    DEN_ETOOBIG = 5,     /* a size does not fit: more than 2**31 - 1 weights in a layer, 2**24 units */
    DEN_EOVERFLOW = 6    /* inference produced NaN/inf: inputs (or weights) too large for float32 */
} den_status;

/* Head kinds: k independent sigmoids with binary cross-entropy, or one k-way softmax. */
enum { DEN_HEAD_SIGMOID = 0, DEN_HEAD_SOFTMAX = 1 };

/* Short English text for a status, for error messages built by the binding. */
const char *den_status_str(den_status s);

static inline int den_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* A bump allocator over one block, used in two passes: with base NULL it only adds up the
 * size (64-byte aligned pieces: whole cache lines), then the same calls hand out pointers. */
typedef struct {
    char *base;
    size_t used;
} den_arena;

static inline void *den_take(den_arena *a, size_t count, size_t size) {
    size_t off = (a->used + 63) & ~(size_t)63;
    a->used = off + count * size;
    return a->base ? a->base + off : NULL;
}

/* Return early with the status of a failing call. */
#define DEN_TRY(expr)                        \
    do {                                     \
        den_status den_try_s_ = (expr);      \
        if (den_try_s_ != DEN_OK) return den_try_s_; \
    } while (0)

#endif
