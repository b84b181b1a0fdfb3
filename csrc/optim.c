/* optim.c: the fused optimizer step described in optim.h. */
#include "optim.h"

#include <math.h>
#include <stddef.h>

/* The loops of step_span, written once with the optional parts as flags. Each call site below
 * passes constants, so after inlining every combination is a branch-free loop the compiler
 * vectorises (with the flags as runtime tests inside one loop, GCC gives up on vectorising). */
static inline __attribute__((always_inline)) void adam_loop(const den_opt *o, float wd, float pull, float l1thr,
                                                            float *restrict w, const float *restrict g,
                                                            float *restrict m, float *restrict v,
                                                            const float *restrict mask, const float *restrict a,
                                                            const float *restrict c, int n, const int has_a,
                                                            const int has_c, const int has_mask, const int has_l1) {
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const float step = o->lr / o->bc1, inv_bc2 = 1.0f / o->bc2;
    for (int i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        if (has_a) gi += pull * (has_c ? c[i] : 1.0f) * (w[i] - a[i]);
        if (has_mask) gi *= mask[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float d = sqrtf(vi * inv_bc2) + eps; /* Adam's per-weight metric */
        float x = w[i] - step * mi / d;
        if (has_l1) {
            /* the L1 prox in the same metric: threshold lr * mu / d */
            x = copysignf(fmaxf(fabsf(x) - l1thr / d, 0.0f), x);
        }
        w[i] = x;
    }
}

static inline __attribute__((always_inline)) void sgd_loop(const den_opt *o, float wd, float pull, float l1thr,
                                                           float *restrict w, const float *restrict g,
                                                           float *restrict m, const float *restrict mask,
                                                           const float *restrict a, const float *restrict c, int n,
                                                           const int has_a, const int has_c, const int has_mask,
                                                           const int has_l1) {
    const float lr = o->lr, mom = o->momentum;
    for (int i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        if (has_a) gi += pull * (has_c ? c[i] : 1.0f) * (w[i] - a[i]);
        if (has_mask) gi *= mask[i];
        if (mom > 0.0f) {
            gi = mom * m[i] + gi;
            m[i] = gi;
        }
        float x = w[i] - lr * gi;
        if (has_l1) x = copysignf(fmaxf(fabsf(x) - l1thr, 0.0f), x);
        w[i] = x;
    }
}

/* Instantiate a loop for the 16 combinations of (anchor, coefficients, mask, L1). */
#define DEN_DISPATCH(LOOP, ...)                                                       \
    switch ((a != NULL) | (c != NULL && a != NULL) << 1 | (mask != NULL) << 2 | (l1thr > 0.0f) << 3) { \
        case 0: LOOP(__VA_ARGS__, 0, 0, 0, 0); break;                                 \
        case 1: LOOP(__VA_ARGS__, 1, 0, 0, 0); break;                                 \
        case 3: LOOP(__VA_ARGS__, 1, 1, 0, 0); break;                                 \
        case 4: LOOP(__VA_ARGS__, 0, 0, 1, 0); break;                                 \
        case 5: LOOP(__VA_ARGS__, 1, 0, 1, 0); break;                                 \
        case 7: LOOP(__VA_ARGS__, 1, 1, 1, 0); break;                                 \
        case 8: LOOP(__VA_ARGS__, 0, 0, 0, 1); break;                                 \
        case 9: LOOP(__VA_ARGS__, 1, 0, 0, 1); break;                                 \
        case 11: LOOP(__VA_ARGS__, 1, 1, 0, 1); break;                                \
        case 12: LOOP(__VA_ARGS__, 0, 0, 1, 1); break;                                \
        case 13: LOOP(__VA_ARGS__, 1, 0, 1, 1); break;                                \
        default: LOOP(__VA_ARGS__, 1, 1, 1, 1); break;                                \
    }

/* One contiguous span of a row: penalties, optimizer update, L1 prox. `a` (anchor) and `c`
 * (pull coefficients) may be NULL. The loops are memory- and divide/sqrt-bound; wider vectors
 * pay, so this is compiled for the x86-64 v4/v3 levels too and the best one the CPU has is
 * picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DEN_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void step_span(const den_opt *o, float wd, float pull, float l1thr, float *restrict w,
                      const float *restrict g, float *restrict m, float *restrict v,
                      const float *restrict mask, const float *restrict a,
                      const float *restrict c, int n) {
    if (o->kind == DEN_OPT_ADAM) {
        DEN_DISPATCH(adam_loop, o, wd, pull, l1thr, w, g, m, v, mask, a, c, n)
    } else {
        DEN_DISPATCH(sgd_loop, o, wd, pull, l1thr, w, g, m, mask, a, c, n)
    }
}

/* Mean of Adam's metric sqrt(v_hat) + eps over a group (1 for SGD): the group prox threshold
 * is divided by it, as the L1 threshold is by each weight's own. */
static float group_metric(const den_opt *o, const float *v, int n, const float *vb) {
    if (o->kind != DEN_OPT_ADAM) return 1.0f;
    double s = 0.0;
    float inv_bc2 = 1.0f / o->bc2;
    for (int i = 0; i < n; i++) s += sqrtf(v[i] * inv_bc2) + o->eps;
    if (vb) s += sqrtf(*vb * inv_bc2) + o->eps;
    return (float)(s / (double)(n + (vb != NULL)));
}

void den_optim_step(const den_opt *opt, const den_reg *reg, const den_block *blk) {
    const float l1thr = opt->lr * reg->l1;
    const float gthr = opt->lr * reg->group;
    for (int r = 0; r < blk->rows; r++) {
        if (blk->row_on && !blk->row_on[r]) continue;
        ptrdiff_t off = (ptrdiff_t)r * blk->ld;
        float *w = blk->w + off;
        const float *g = blk->gw + off;
        float *m = blk->mw + off;
        float *v = blk->vw ? blk->vw + off : NULL;
        const float *mask = blk->mask ? blk->mask + off : NULL;
        int anchored = (blk->aw && r < blk->arows) ? blk->acols : 0;
        if (anchored > blk->cols) anchored = blk->cols;
        if (anchored > 0)
            step_span(opt, reg->wd, reg->pull, l1thr, w, g, m, v, mask, blk->aw + off,
                      blk->cw ? blk->cw + off : NULL, anchored);
        if (anchored < blk->cols)
            step_span(opt, reg->wd, reg->pull, l1thr, w + anchored, g + anchored, m + anchored,
                      v ? v + anchored : NULL, mask ? mask + anchored : NULL, NULL, NULL,
                      blk->cols - anchored);
        /* Bias: no L1, no weight decay; pulled like its row's weights. */
        if (blk->b) {
            const float *ab = (blk->ab && r < blk->arows) ? blk->ab + r : NULL;
            const float *cb = (ab && blk->cb) ? blk->cb + r : NULL;
            step_span(opt, 0.0f, reg->pull, 0.0f, blk->b + r, blk->gb + r, blk->mb + r,
                      blk->vb ? blk->vb + r : NULL, NULL, ab, cb, 1);
        }
        if (gthr > 0.0f) {
            double sq = 0.0;
            for (int i = 0; i < blk->cols; i++) sq += (double)w[i] * w[i];
            if (blk->b) sq += (double)blk->b[r] * blk->b[r];
            double norm = sqrt(sq);
            double thr = gthr / group_metric(opt, v, blk->cols, blk->b ? blk->vb + r : NULL);
            float f = norm > thr ? (float)(1.0 - thr / norm) : 0.0f;
            for (int i = 0; i < blk->cols; i++) w[i] *= f;
            if (blk->b) blk->b[r] *= f;
        }
    }
}
