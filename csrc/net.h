/* net.h: the growable network that a model stores between training stages.
 *
 * A den_net is a trunk of hidden layers plus one output head per task. It is the *storage*:
 * training and inference happen on a compact den_model gathered from it (model.h), and the
 * structural algorithms of DEN (expansion, pruning, split/duplication, subnetwork selection)
 * are the functions below.
 *
 * Units and columns. Layer l has n_out units (rows of W) and reads n_in input units (the units
 * of layer l-1, or the input features for l = 0); each input unit owns `span` consecutive
 * columns of W (span = 1 for dense layers; a conv filter or a flattened feature map owns more),
 * so W is (n_out, n_in * span), row-major. A head is stored like a layer whose units are its k
 * outputs.
 *
 * Timestamps. Every unit carries stamp = the task at which it was born. Units are only ever
 * appended (expansion, duplication) with a stamp >= every existing stamp, and removal keeps the
 * order, so in every layer stamps are non-decreasing: the units a task j may use (stamp <= j)
 * are a prefix of each layer. A head's stamp is its task.
 *
 * Masks. mask[r, c] = 1 where a connection may be nonzero. A unit born at task t never feeds a
 * unit (or head) born before t: appending units adds masked-out columns to older rows. The one
 * exception is a duplicate (split), which copies its original's outgoing connections; timestamped
 * inference is what keeps it away from older tasks.
 *
 * Ownership: the net owns every buffer; callers outside the C core only ever receive copies, so
 * growth (which reallocates) can never leave a dangling view.
 */
#ifndef DEN_NET_H
#define DEN_NET_H

#include <stdint.h>

#include "den_common.h"

enum { DEN_OP_DENSE = 0, DEN_OP_CONV = 1 };

typedef struct {
    int n_out;       /* units (rows): neurons, or a conv layer's filters */
    int n_in;        /* input units: units of the layer below, or input channels/features */
    int span;        /* columns per input unit: 1 (dense on dense), kh*kw (conv), the pixels of
                        one feature map (dense on conv) */
    int kind;        /* heads: DEN_HEAD_SIGMOID / DEN_HEAD_SOFTMAX; hidden layers: 0 */
    int op;          /* DEN_OP_DENSE or DEN_OP_CONV */
    int h, w;        /* conv: input height and width ("same" padding, stride 1) */
    int kh, kw;      /* conv: kernel size (odd) */
    int pool;        /* conv: max-pool window and stride after the ReLU; 1 = none */
    float *W;        /* (n_out, n_in * span) */
    float *b;        /* (n_out) */
    uint8_t *mask;   /* (n_out, n_in * span): 1 = allowed */
    int32_t *stamp;  /* (n_out): birth task of each unit, non-decreasing */
} den_net_layer;

typedef struct {
    int n_input;             /* input features: columns of X, = in_c * in_h * in_w */
    int in_c, in_h, in_w;    /* inputs as images (C, H, W), C-order; a vector input is (n, 1, 1) */
    int n_layers;            /* hidden layers (>= 1): conv layers first, then dense ones */
    den_net_layer *layers;   /* [n_layers] */
    int n_heads;
    den_net_layer *heads;    /* [n_heads]; heads[h].stamp[*] is head h's task */
} den_net;

static inline int64_t den_layer_cols(const den_net_layer *L) { return (int64_t)L->n_in * L->span; }
static inline int den_head_task(const den_net_layer *h) { return h->n_out > 0 ? h->stamp[0] : 0; }
/* Values each unit of the layer outputs: a dense unit 1, a conv filter its pooled map. */
static inline int den_layer_out_pixels(const den_net_layer *L) {
    return L->op == DEN_OP_CONV ? (L->h / L->pool) * (L->w / L->pool) : 1;
}

/* One conv layer of a trunk: filters, kernel, max-pool window after it (1: none). */
typedef struct {
    int filters, kh, kw, pool;
} den_conv_spec;

/* A new trunk for inputs of shape (in_c, in_h, in_w): n_conv conv layers, then n_dense dense
 * layers (at least one) with widths[l] units; stamp 0, He-normal weights (std sqrt(2/fan_in)),
 * zero biases, all connections allowed; no heads yet. A vector input is (n, 1, 1). */
den_status den_net_new(den_net **out, int in_c, int in_h, int in_w, int n_conv, const den_conv_spec *conv,
                       int n_dense, const int *widths, uint64_t seed);
void den_net_free(den_net *net);
den_status den_net_clone(den_net **out, const den_net *net);

/* Append a head with k outputs for `task` (stamp), reading every top unit born at or before
 * `task`; weights N(0, 1/fan_in), zero bias. Its index is returned in *index. */
den_status den_net_add_head(den_net *net, int kind, int k, int task, uint64_t seed, int *index);

/* Append count[l] units to every hidden layer l (bottom-up), stamped `stamp` (must be >= every
 * existing stamp). New units read every unit of the layer below; their outgoing weights are
 * allowed only into units and heads stamped >= stamp, and start random there (zero elsewhere). */
den_status den_net_add_units(den_net *net, const int *count, int stamp, uint64_t seed);

/* Keep only units with keep[l][i] != 0 in each hidden layer l (keep[l] NULL keeps the layer
 * whole); their outgoing columns in the layer above (or in every head) go with them. */
den_status den_net_remove_units(den_net *net, const uint8_t *const *keep);

/* Split: for each hidden layer l, append a copy of every unit i with dup[l][i] != 0, stamped
 * `stamp`: the copy takes the unit's current incoming weights, bias and mask, and its outgoing
 * weights into every unit of the layer above; in the heads, only heads stamped >= stamp get the
 * copy's outgoing weights. Units are copied layer by layer bottom-up, so a duplicate in layer
 * l+1 also reads the duplicates of layer l. */
den_status den_net_duplicate_units(den_net *net, const uint8_t *const *dup, int stamp);

/* Give units with which[l][i] != 0 back their weights and bias from `prev` (a clone taken at
 * the start of the task): columns that existed in prev are copied, newer columns set to zero.
 * Only units that exist in prev may be named. */
den_status den_net_restore_units(den_net *net, const den_net *prev, const uint8_t *const *which);

/* Drift of layer l's units against prev: rho[i] = ||w_i - w_i^prev||_2 over incoming weights
 * (columns new since prev count against zero); for units newer than prev rho[i] = 0. */
den_status den_net_drift(const den_net *net, const den_net *prev, int layer, float *rho);

/* Breadth-first selection of the subnetwork that feeds head h through nonzero weights:
 * top units with any nonzero weight to any output of the head, then downward every unit (and
 * finally every input unit: feature or channel) with a nonzero weight into a selected unit.
 * units[l] (n_out of layer l) and inputs (in_c) receive 0/1 flags. Only units with stamp <= the
 * head's task. */
den_status den_net_select(const den_net *net, int h, uint8_t *const *units, uint8_t *inputs);

/* Number of units of each layer that task `task` may use (stamp <= task); task < 0: all. */
void den_net_prefix(const den_net *net, int task, int *widths);

/* Nonzero parameters (weights and biases) that task `task`'s prediction uses: the units with
 * stamp <= task and the head(s) of that task. task < 0: the whole model, every head. */
int64_t den_net_nonzero(const den_net *net, int task);

/* Units of layer l whose incoming group (weights and bias) is entirely zero, or which have no
 * nonzero outgoing weight (into the layer above, or into any head). flags[i] = 1 for those. */
den_status den_net_dead_units(const den_net *net, int layer, uint8_t *flags);

#endif
