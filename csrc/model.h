/* model.h: the compact network that training and inference run on.
 *
 * A den_model is gathered from a den_net (net.h): a chosen subset of units per layer (all of
 * them, the units a task may use, or DEN's selected subnetwork S), the chosen heads, and the
 * input features those units read. Each layer's weights become one dense, contiguous matrix, so
 * compute touches only what was gathered; after training, den_model_scatter writes the
 * trainable rows back to exactly the places they came from and nothing else.
 *
 * Ownership: a den_model owns one allocation holding all its parameters, gradients, optimizer
 * state, masks, anchors and index maps (sizes computed in one place: layout()). It never points
 * into the net it came from, so the net may change (or be freed) while a model exists.
 */
#ifndef DEN_MODEL_H
#define DEN_MODEL_H

#include <stdint.h>

#include "den_common.h"
#include "net.h"
#include "optim.h"

typedef struct {
    int n_out, n_in, span, cols; /* compact sizes; cols = n_in * span */
    int kind;                    /* heads: DEN_HEAD_*; hidden layers: 0 */
    int op, h, w, kh, kw, pool;  /* geometry, as in den_net_layer */
    int in_pixels;               /* values per input unit in the layer's input rows */
    int out_pixels;              /* values per unit in the layer's output rows */
    float *W, *b;                /* (n_out, cols), (n_out) */
    float *gW, *gb;              /* gradients (NULL unless gathered for training) */
    float *mW, *vW, *mb, *vb;    /* optimizer state (NULL unless training) */
    float *mask;                 /* (n_out, cols) 0/1, or NULL when nothing is masked out */
    uint8_t *row_on;             /* (n_out) 1 = trainable; NULL = every row trainable */
    int n_on;                    /* number of trainable rows */
    float *aW, *ab;              /* anchor (previous weights), same layout; NULL: no anchor */
    float *cW, *cb;              /* per-parameter pull coefficients; NULL: 1 */
    int arows, acols;            /* anchored block */
    int32_t *stamp;              /* (n_out) birth task of each unit (heads: their task) */
    int32_t *src_row;            /* (n_out) row in the net */
    int32_t *src_in;             /* (n_in) input unit in the net */
    int64_t steps;               /* optimizer steps taken on this block */
    den_reg reg;                 /* regularisers applied when this block is updated */
} den_model_layer;

typedef struct {
    int n_layers;                /* hidden layers (0: a head on given features) */
    den_model_layer *layers;
    int n_heads;
    den_model_layer *heads;
    int32_t *head_src;           /* net head index of each compact head */
    int n_input;                 /* compact input units (features, or image channels) */
    int in_pixels;               /* X columns per input unit (H*W of an image; 1 for vectors) */
    int training;                /* gradients and optimizer state exist */
    int use_stamps;              /* each head reads only units with stamp <= its task */
    int *widths;                 /* (n_heads, n_layers) units of each layer each head uses */
    int64_t work_bytes;          /* working memory the last den_model_train call allocated */
    void *mem;
} den_model;

/* What to gather. NULL pointers mean "everything". */
typedef struct {
    const uint8_t *const *units;  /* [n_layers] flags over the net's units of each layer */
    const uint8_t *inputs;        /* flags over the net's input features */
    const uint8_t *const *train;  /* [n_layers] flags over the net's units: trainable rows
                                     (among the gathered ones); NULL: all gathered rows */
    const int *heads;             /* net head indices to gather */
    int n_heads;
    const uint8_t *head_train;    /* per gathered head: trainable?; NULL: all */
    int head_only;                /* gather no hidden layer: the heads read top-layer features */
    int max_stamp;                /* only units with stamp <= max_stamp; < 0: no limit */
    int use_stamps;               /* each head reads only units with stamp <= its task */
    int training;                 /* allocate gradients and optimizer state */
    den_reg layer_reg, head_reg;  /* regularisers of hidden layers / heads */
    const den_net *anchor;        /* weights to pull toward (same units; may be smaller) */
    const den_net *coef;          /* per-parameter pull coefficients, shaped like anchor */
} den_gather;

den_status den_model_gather(den_model **out, const den_net *net, const den_gather *g);
void den_model_free(den_model *m);

/* Write the trainable rows' weights (over the gathered columns) and biases back to the net:
 * parameters (grads = 0) or gradients (grads = 1; used to hand out Fisher information). */
den_status den_model_scatter(const den_model *m, den_net *net, int grads);

/* One sample source: rows of X with the net's full input width, targets for one head.
 * Working memory of a training call (allocated once per call, never per minibatch), for
 * batch B, in floats:
 *   B * [inputs + for every layer its output (units * out_pixels), and for pooled conv layers
 *        also the pre-pooling map (units * h * w) and the pooling argmax + two gradient rows of
 *        the largest layer output + 4 rows of the widest head]
 * + B * units * h * w of the largest pre-pooling gradient map
 * + the largest conv layer's im2col columns (C*kh*kw * nb*h*w) and GEMM result (F * nb*h*w),
 *   nb = den_conv_samples_per_gemm (conv.h: the columns stay within 4 MiB)
 * + the model itself: parameters, gradients and two optimizer moments (4x the gathered
 *   weights), plus masks and anchors when the stage uses them.
 * Net.workspace_bytes reports the workspace (all but the model itself) the last train() call
 * allocated; benchmarks/cnn_throughput.py evaluates the formula for the LeNet and AlexNet
 * trunks and checks it against that. */
typedef struct {
    const float *X;        /* (n, n_features), row-major */
    int64_t n;
    int n_features;        /* row stride of X (the net's n_input, or the top width for head_only) */
    const float *ysig;     /* (n, k) targets in [0, 1] for a sigmoid head, else NULL */
    const int32_t *ycls;   /* (n) class ids for a softmax head, else NULL */
    int head;              /* compact head index */
} den_data;

/* Progress, handed to the poll callback. */
typedef struct {
    int epoch, epochs;         /* current epoch (0-based) and total */
    int64_t step, steps;       /* minibatch within this epoch, and per epoch */
    double loss;               /* mean training loss of the last completed epoch (NaN before) */
} den_progress;

/* Called with the GIL released by the trainer about every poll_interval seconds and after each
 * epoch; returning nonzero stops training with DEN_EINTR. */
typedef int (*den_poll_fn)(void *ctx, const den_progress *p);

typedef struct {
    int epochs, batch_size;
    den_opt opt;            /* kind, lr, beta1, beta2, eps, momentum (bc1/bc2 set per step) */
    float lr_decay;         /* learning rate multiplied by this after every epoch */
    uint64_t seed;          /* shuffling */
    den_poll_fn poll;
    void *poll_ctx;
    double poll_interval;   /* seconds */
} den_train_cfg;

/* Train for cfg->epochs epochs over every sample of every data source (each epoch: each source
 * shuffled, minibatches of one source at a time, sources interleaved round-robin). The mean
 * training loss of the last epoch goes to *loss. */
den_status den_model_train(den_model *m, const den_data *data, int n_data, const den_train_cfg *cfg,
                           double *loss);

/* Mean loss over all samples of one source (no training). */
den_status den_model_loss(den_model *m, const den_data *d, double *loss);

/* Probabilities (n, k) of compact head h for n rows of X. */
den_status den_model_predict(den_model *m, const float *X, int64_t n, int n_features, int h,
                             float *prob);

/* Top hidden layer activations (n, width) as seen by compact head h's task. */
den_status den_model_features(den_model *m, const float *X, int64_t n, int n_features, int h,
                              float *out);

/* Gradient of the mean loss of one source (no regularisers) w.r.t. every gathered parameter,
 * written into the gradient buffers (gW, gb) of every gathered layer and head d->head. */
den_status den_model_gradients(den_model *m, const den_data *d);

enum { DEN_FISHER_EMPIRICAL = 0, DEN_FISHER_EXACT = 1 };

/* Diagonal Fisher information of head d->head's task, written into the gradient buffers
 * (gW, gb) of every gathered layer and that head: the mean over samples of the squared
 * per-sample gradient of the sample's loss. EMPIRICAL uses the true targets; EXACT takes the
 * expectation over the model's own predictive distribution (k backward passes per batch). */
den_status den_model_fisher(den_model *m, const den_data *d, int mode);

#endif
