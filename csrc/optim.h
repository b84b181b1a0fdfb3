/* optim.h: fused optimizer steps (Adam, SGD) with every regulariser den uses.
 *
 * One call updates one parameter block: a weight matrix W (rows, cols; row stride ld) and its
 * bias b (rows), in ONE pass per row: gradient + penalties -> optimizer -> proximal steps.
 *
 * Per weight w with gradient g (bias entries follow the same path without L1 and weight decay):
 *   g += wd * w                                  weight decay ((wd/2) ||W||^2)
 *   g += pull * c * (w - a)     on the anchored block rows < arows, cols < acols:
 *                               L2 to previous weights (c = 1: pull = 2 lambda for
 *                               lambda ||W - W_prev||^2) or EWC (c = Fisher, pull = lambda)
 *   g *= mask                   structurally absent weights get no gradient (and stay 0)
 *   Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; d = sqrt(v/bc2) + eps;
 *         w -= lr (m/bc1) / d
 *   SGD:  m = momentum m + g (if momentum > 0, else m = g); w -= lr m;  d = 1
 *   L1 proximal soft-threshold: w = sign(w) max(|w| - lr l1 / d, 0)       (exact zeros)
 *   group lasso proximal step on the row's group (its weights and bias), with dbar the
 *   group's mean d:  (w, b) *= max(0, 1 - lr group / (dbar ||(w, b)||_2))  (exact zero rows)
 * The proximal steps are taken in the optimizer's own metric d (Adam scales each weight's
 * step by 1/d, so its prox must too). This keeps l1 and group on the scale of the objective
 * loss + l1 ||W||_1 + group sum_g ||W_g||_2 for every optimizer: a zero weight stays zero while
 * its loss gradient is smaller than l1, as in plain proximal gradient descent. (A threshold of
 * lr * l1 alone would, under Adam, compare l1 with a normalised step and mean something else
 * for every problem.)
 * Rows with row_on[r] == 0 are not touched at all (frozen units).
 */
#ifndef DEN_OPTIM_H
#define DEN_OPTIM_H

#include <stdint.h>

enum { DEN_OPT_ADAM = 0, DEN_OPT_SGD = 1 };

typedef struct {
    int kind;          /* DEN_OPT_ADAM or DEN_OPT_SGD */
    float lr;          /* learning rate of this step (schedule already applied) */
    float beta1, beta2, eps;  /* Adam */
    float momentum;    /* SGD */
    float bc1, bc2;    /* Adam bias corrections 1 - beta^t for this block's step count t */
} den_opt;

typedef struct {
    float l1;     /* L1 strength (mu); threshold lr*l1 per step; weights only */
    float wd;     /* weight decay; weights only */
    float pull;   /* strength of the pull toward the anchor */
    float group;  /* group lasso strength (gamma); threshold lr*group per row group */
} den_reg;

typedef struct {
    float *w, *b;             /* parameters: (rows, ld) and (rows) */
    const float *gw, *gb;     /* gradients, same layout */
    float *mw, *vw, *mb, *vb; /* optimizer state, same layout (vw/vb unused by SGD) */
    const float *mask;        /* 0/1 per weight, same layout; NULL: no structural zeros */
    const uint8_t *row_on;    /* per row: 1 trainable, 0 frozen; NULL: all trainable */
    const float *aw, *ab;     /* anchor (previous) weights, same layout; NULL: no pull */
    const float *cw, *cb;     /* per-parameter pull coefficients (EWC Fisher); NULL: 1 */
    int arows, acols;         /* anchored block: rows < arows and cols < acols */
    int rows, cols, ld;
} den_block;

/* Update the block in place. */
void den_optim_step(const den_opt *opt, const den_reg *reg, const den_block *blk);

#endif
