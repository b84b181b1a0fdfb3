/* train.c: forward/backward passes, the training loop, inference and Fisher information on a
 * compact den_model (model.h). All buffers are allocated once per call; nothing is allocated
 * per minibatch. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conv.h"
#include "dense.h"
#include "loss.h"
#include "model.h"
#include "rng.h"

/* ---- workspace ---------------------------------------------------------------------------- */

typedef struct {
    int B;            /* rows it holds */
    float *x;         /* (B, n_input * in_pixels) the batch's inputs */
    float **act;      /* [n_layers] (B, n_out * out_pixels) outputs after ReLU (and pooling) */
    float **pre;      /* [n_layers] pooled conv layers: (B, n_out, h, w) the ReLU output before
                         pooling; other layers: act[l] */
    int32_t **arg;    /* [n_layers] pooled conv layers: argmax of each pooling window */
    float *cols;      /* im2col buffer of the largest conv layer (nb samples side by side) */
    float *ctmp;      /* that layer's GEMM result before it is scattered into (B, F, H, W) */
    float *dpre;      /* (B, n_out, h, w) gradient of the largest pre-pooling map */
    float *d0, *d1;   /* (B, dmax) gradients flowing down, ping-pong */
    float *logits;    /* (B, kmax) */
    float *prob;      /* (B, kmax) */
    float *dlogits;   /* (B, kmax) */
    float *ysig;      /* (B, kmax) sigmoid targets of the batch */
    int32_t *ycls;    /* (B) softmax targets of the batch */
    float **sq;       /* Fisher only: [n_layers + 1] squared inputs of each dense layer and the head */
    float *dsq;       /* Fisher only: (B, max(dmax, kmax)) */
    float *ftmp;      /* Fisher only: one conv layer's per-sample weight gradient */
    int64_t *rows;    /* (B) sample indices of the batch */
    void *mem;
    int64_t bytes;    /* size of mem */
} work;

static void work_free(work *w) {
    free(w->mem);
    memset(w, 0, sizeof *w);
}

static int64_t in_len(const den_model *m, int l) { /* input row length of layer l (l == NL: head) */
    if (l == 0) return (int64_t)m->n_input * m->in_pixels;
    const den_model_layer *L = &m->layers[l - 1];
    return (int64_t)L->n_out * L->out_pixels;
}

/* Lay the workspace out over arena a (two passes: count, then assign). */
static void work_layout(work *w, den_arena *a, const den_model *m, int B, int fisher) {
    int NL = m->n_layers;
    int64_t kmax = 1, dmax = 1, cols = 1, ctmp = 1, dpre = 1, ftmp = 1;
    for (int h = 0; h < m->n_heads; h++) kmax = m->heads[h].n_out > kmax ? m->heads[h].n_out : kmax;
    for (int l = 0; l < NL; l++) {
        const den_model_layer *L = &m->layers[l];
        int64_t act = (int64_t)L->n_out * L->out_pixels;
        dmax = act > dmax ? act : dmax;
        if (L->op == DEN_OP_CONV) {
            int64_t nb = den_conv_samples_per_gemm(B, L->n_in, L->h, L->w, L->kh, L->kw);
            int64_t c = nb * L->n_in * L->kh * L->kw * L->h * L->w;
            int64_t t = nb * L->n_out * L->h * L->w;
            int64_t p = (int64_t)L->n_out * L->h * L->w;
            int64_t f = (int64_t)L->n_out * L->n_in * L->kh * L->kw;
            cols = c > cols ? c : cols;
            ctmp = t > ctmp ? t : ctmp;
            dpre = p > dpre ? p : dpre;
            ftmp = f > ftmp ? f : ftmp;
        }
    }
    w->B = B;
    w->rows = den_take(a, (size_t)B, sizeof(int64_t));
    w->act = den_take(a, (size_t)NL + 1, sizeof(float *));
    w->pre = den_take(a, (size_t)NL + 1, sizeof(float *));
    w->arg = den_take(a, (size_t)NL + 1, sizeof(int32_t *));
    w->sq = den_take(a, (size_t)NL + 1, sizeof(float *));
    w->x = den_take(a, (size_t)(B * in_len(m, 0)), sizeof(float));
    for (int l = 0; l < NL; l++) {
        const den_model_layer *L = &m->layers[l];
        float *act = den_take(a, (size_t)B * L->n_out * L->out_pixels, sizeof(float));
        float *pre = act;
        int32_t *arg = NULL;
        if (L->op == DEN_OP_CONV && L->pool > 1) {
            pre = den_take(a, (size_t)B * L->n_out * L->h * L->w, sizeof(float));
            arg = den_take(a, (size_t)B * L->n_out * L->out_pixels, sizeof(int32_t));
        }
        if (a->base) {
            w->act[l] = act;
            w->pre[l] = pre;
            w->arg[l] = arg;
        }
    }
    w->cols = den_take(a, (size_t)cols, sizeof(float));
    w->ctmp = den_take(a, (size_t)ctmp, sizeof(float));
    w->dpre = den_take(a, (size_t)(B * dpre), sizeof(float));
    w->d0 = den_take(a, (size_t)(B * dmax), sizeof(float));
    w->d1 = den_take(a, (size_t)(B * dmax), sizeof(float));
    w->logits = den_take(a, (size_t)(B * kmax), sizeof(float));
    w->prob = den_take(a, (size_t)(B * kmax), sizeof(float));
    w->dlogits = den_take(a, (size_t)(B * kmax), sizeof(float));
    w->ysig = den_take(a, (size_t)(B * kmax), sizeof(float));
    w->ycls = den_take(a, (size_t)B, sizeof(int32_t));
    if (fisher) {
        for (int l = 0; l <= NL; l++) {
            int dense = l == NL || m->layers[l].op == DEN_OP_DENSE;
            float *sq = dense ? den_take(a, (size_t)(B * in_len(m, l)), sizeof(float)) : NULL;
            if (a->base) w->sq[l] = sq;
        }
        w->dsq = den_take(a, (size_t)(B * (dmax > kmax ? dmax : kmax)), sizeof(float));
        w->ftmp = den_take(a, (size_t)ftmp, sizeof(float));
    }
}

/* Allocate a workspace for batches of B rows; fisher adds the Fisher buffers. */
static den_status work_new(work *w, const den_model *m, int B, int fisher) {
    memset(w, 0, sizeof *w);
    den_arena a = {NULL, 0};
    work_layout(w, &a, m, B, fisher);
    w->bytes = (int64_t)a.used + 64;
    w->mem = malloc((size_t)w->bytes);
    if (!w->mem) return DEN_ENOMEM;
    a = (den_arena){(char *)(((uintptr_t)w->mem + 63) & ~(uintptr_t)63), 0};
    work_layout(w, &a, m, B, fisher);
    return DEN_OK;
}

/* ---- shapes ------------------------------------------------------------------------------- */

/* Units of hidden layer l that head h reads (h < 0: every gathered unit). */
static inline int width(const den_model *m, int h, int l) {
    return h < 0 ? m->layers[l].n_out : m->widths[h * m->n_layers + l];
}
/* Input units feeding layer l (l == n_layers: the head). */
static inline int units_into(const den_model *m, int h, int l) {
    return l == 0 ? m->n_input : width(m, h, l - 1);
}

/* ---- batches -------------------------------------------------------------------------------- */

/* Copy the batch's rows (and targets) into the workspace; input units are gathered through
 * the first layer's source map unless the model reads every one. */
static void load_batch(const den_model *m, work *w, const den_data *d, int B) {
    int px = m->in_pixels, nin = m->n_input;
    const int32_t *map = (m->n_layers > 0 && (int64_t)nin * px != d->n_features) ? m->layers[0].src_in : NULL;
    for (int i = 0; i < B; i++) {
        const float *src = d->X + w->rows[i] * (int64_t)d->n_features;
        float *dst = w->x + (int64_t)i * nin * px;
        if (!map)
            memcpy(dst, src, (size_t)nin * px * sizeof(float));
        else if (px == 1)
            for (int j = 0; j < nin; j++) dst[j] = src[map[j]];
        else
            for (int j = 0; j < nin; j++) memcpy(dst + (int64_t)j * px, src + (int64_t)map[j] * px, (size_t)px * sizeof(float));
    }
    if (d->head < 0) return;
    int k = m->heads[d->head].n_out;
    if (d->ysig)
        for (int i = 0; i < B; i++) memcpy(w->ysig + (int64_t)i * k, d->ysig + w->rows[i] * k, (size_t)k * sizeof(float));
    if (d->ycls)
        for (int i = 0; i < B; i++) w->ycls[i] = d->ycls[w->rows[i]];
}

static void forward(const den_model *m, work *w, int B, int h, int with_head) {
    const float *in = w->x;
    for (int l = 0; l < m->n_layers; l++) {
        const den_model_layer *L = &m->layers[l];
        int cin = units_into(m, h, l), wl = width(m, h, l);
        if (L->op == DEN_OP_CONV) {
            den_conv_forward(w->pre[l], w->cols, w->ctmp, in, L->W, L->b, B, cin, L->h, L->w, wl, L->kh, L->kw,
                             L->cols, 1);
            if (L->pool > 1) den_maxpool_forward(w->act[l], w->arg[l], w->pre[l], B, wl, L->h, L->w, L->pool);
        } else {
            den_dense_forward(w->act[l], in, L->W, L->b, B, cin * L->span, wl, L->cols, 1);
        }
        in = w->act[l];
    }
    if (with_head) {
        const den_model_layer *H = &m->heads[h];
        den_dense_forward(w->logits, in, H->W, H->b, B, units_into(m, h, m->n_layers) * H->span, H->n_out, H->cols, 0);
    }
}

/* Summed loss of the batch; with grad, dlogits = d(mean loss)/d(logits). */
static double head_loss(const den_model *m, work *w, int B, int h, int grad) {
    const den_model_layer *H = &m->heads[h];
    float scale = 1.0f / (float)B;
    if (H->kind == DEN_HEAD_SOFTMAX)
        return den_softmax_ce(grad ? w->dlogits : NULL, w->prob, w->logits, w->ycls, B, H->n_out, scale);
    return den_sigmoid_bce(grad ? w->dlogits : NULL, w->prob, w->logits, w->ysig, B, H->n_out, scale);
}

static int lowest_trainable(const den_model *m) {
    for (int l = 0; l < m->n_layers; l++)
        if (m->layers[l].n_on > 0) return l;
    return m->n_layers;
}

/* Turn d, the gradient w.r.t. layer l's output, into the gradient w.r.t. its pre-activation
 * (undo pooling, then the ReLU); returns where that gradient now is. */
static float *through_relu(const den_model *m, work *w, int B, int h, int l, float *d) {
    const den_model_layer *L = &m->layers[l];
    int wl = width(m, h, l);
    if (L->op == DEN_OP_CONV) {
        if (L->pool > 1) {
            den_maxpool_backward(w->dpre, d, w->arg[l], B, wl, L->h, L->w, L->pool);
            d = w->dpre;
        }
        den_relu_backward(d, w->pre[l], (int64_t)B * wl * L->h * L->w);
    } else {
        den_relu_backward(d, w->act[l], (int64_t)B * wl);
    }
    return d;
}

/* Layer l's backward from dz (gradient w.r.t. its pre-activation): weight gradients into
 * gW/gb (if given) and the input gradient into dinp (if given). */
static void layer_backward(const den_model *m, work *w, int B, int h, int l, const float *dz, float *dinp,
                           float *gW, float *gb) {
    const den_model_layer *L = &m->layers[l];
    const float *in = l > 0 ? w->act[l - 1] : w->x;
    int cin = units_into(m, h, l), wl = width(m, h, l);
    if (L->op == DEN_OP_CONV)
        den_conv_backward(dinp, gW, gb, w->cols, w->ctmp, dz, in, L->W, B, cin, L->h, L->w, wl, L->kh, L->kw,
                          L->cols);
    else
        den_dense_backward(dinp, gW, gb, dz, in, L->W, B, cin * L->span, wl, L->cols);
}

static void backward(const den_model *m, work *w, int B, int h, int lowest) {
    const den_model_layer *H = &m->heads[h];
    int NL = m->n_layers;
    const float *top = NL > 0 ? w->act[NL - 1] : w->x;
    float *d = w->d0, *dn = w->d1;
    den_dense_backward(lowest < NL ? d : NULL, H->n_on ? H->gW : NULL, H->n_on ? H->gb : NULL, w->dlogits, top,
                       H->W, B, units_into(m, h, NL) * H->span, H->n_out, H->cols);
    for (int l = NL - 1; l >= lowest; l--) {
        const den_model_layer *L = &m->layers[l];
        float *dz = through_relu(m, w, B, h, l, d);
        layer_backward(m, w, B, h, l, dz, l > lowest ? dn : NULL, L->n_on ? L->gW : NULL, L->n_on ? L->gb : NULL);
        float *t = d; d = dn; dn = t;
    }
}

static void update(den_model_layer *L, int rows, int cols, const den_opt *base, float lr) {
    L->steps++;
    den_opt o = *base;
    o.lr = lr;
    o.bc1 = (float)(1.0 - pow(base->beta1, (double)L->steps));
    o.bc2 = (float)(1.0 - pow(base->beta2, (double)L->steps));
    den_block blk = {
        .w = L->W, .b = L->b, .gw = L->gW, .gb = L->gb,
        .mw = L->mW, .vw = L->vW, .mb = L->mb, .vb = L->vb,
        .mask = L->mask, .row_on = L->row_on,
        .aw = L->aW, .ab = L->ab, .cw = L->cW, .cb = L->cb, .arows = L->arows, .acols = L->acols,
        .rows = rows, .cols = cols, .ld = L->cols,
    };
    den_optim_step(&o, &L->reg, &blk);
}

static void step(den_model *m, int h, const den_opt *opt, float lr) {
    for (int l = 0; l < m->n_layers; l++) {
        den_model_layer *L = &m->layers[l];
        if (L->n_on) update(L, width(m, h, l), units_into(m, h, l) * L->span, opt, lr);
    }
    den_model_layer *H = &m->heads[h];
    if (H->n_on) update(H, H->n_out, units_into(m, h, m->n_layers) * H->span, opt, lr);
}

/* ---- checks --------------------------------------------------------------------------------- */

/* Do rows of n_features columns hold every input unit the model reads? */
static int inputs_fit(const den_model *m, int64_t n_features) {
    if (m->n_layers == 0) return n_features == m->n_input;
    int64_t px = m->in_pixels;
    if (n_features % px != 0 || n_features < (int64_t)m->n_input * px) return 0;
    return m->n_input == 0 || (m->layers[0].src_in[m->n_input - 1] + 1) * px <= n_features;
}

static den_status check_data(const den_model *m, const den_data *d) {
    if (d->head < 0 || d->head >= m->n_heads || !d->X || d->n < 1) return DEN_EINVAL;
    if (!inputs_fit(m, d->n_features)) return DEN_EINVAL;
    const den_model_layer *H = &m->heads[d->head];
    if (H->kind == DEN_HEAD_SOFTMAX ? !d->ycls : !d->ysig) return DEN_EINVAL;
    if (d->ycls)
        for (int64_t i = 0; i < d->n; i++)
            if (d->ycls[i] < 0 || d->ycls[i] >= H->n_out) return DEN_EINVAL;
    return DEN_OK;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- training ------------------------------------------------------------------------------- */

den_status den_model_train(den_model *m, const den_data *data, int n_data, const den_train_cfg *cfg,
                           double *loss_out) {
    if (!m->training || n_data < 1 || cfg->epochs < 0 || cfg->batch_size < 1 || !(cfg->opt.lr >= 0.0f))
        return DEN_EINVAL;
    for (int i = 0; i < n_data; i++) DEN_TRY(check_data(m, &data[i]));
    *loss_out = NAN;
    int64_t total = 0, steps = 0, longest = 0;
    for (int i = 0; i < n_data; i++) {
        total += data[i].n;
        steps += (data[i].n + cfg->batch_size - 1) / cfg->batch_size;
        longest = data[i].n > longest ? data[i].n : longest;
    }
    int B = cfg->batch_size < longest ? cfg->batch_size : (int)longest;
    work w;
    DEN_TRY(work_new(&w, m, B, 0));
    m->work_bytes = w.bytes;
    int64_t **order = calloc((size_t)n_data, sizeof *order);
    int64_t *pos = calloc((size_t)n_data, sizeof *pos);
    den_status st = (order && pos) ? DEN_OK : DEN_ENOMEM;
    for (int i = 0; i < n_data && st == DEN_OK; i++) {
        order[i] = malloc((size_t)data[i].n * sizeof(int64_t));
        if (!order[i]) st = DEN_ENOMEM;
        else
            for (int64_t j = 0; j < data[i].n; j++) order[i][j] = j;
    }
    den_rng rng;
    den_rng_seed(&rng, cfg->seed);
    int lowest = lowest_trainable(m);
    den_progress prog = {0, cfg->epochs, 0, steps, NAN};
    double last_poll = now_seconds();
    for (int e = 0; e < cfg->epochs && st == DEN_OK; e++) {
        float lr = (float)(cfg->opt.lr * pow(cfg->lr_decay, (double)e));
        for (int i = 0; i < n_data; i++) {
            den_rng_shuffle(&rng, order[i], data[i].n);
            pos[i] = 0;
        }
        double sum = 0.0;
        int64_t s = 0;
        while (s < steps && st == DEN_OK) {
            for (int i = 0; i < n_data && st == DEN_OK; i++) {
                const den_data *d = &data[i];
                if (pos[i] >= d->n) continue;
                int b = (int)(d->n - pos[i] < B ? d->n - pos[i] : B);
                memcpy(w.rows, order[i] + pos[i], (size_t)b * sizeof(int64_t));
                load_batch(m, &w, d, b);
                forward(m, &w, b, d->head, 1);
                double bl = head_loss(m, &w, b, d->head, 1);
                if (!isfinite(bl)) {
                    st = DEN_ENONFINITE;
                    break;
                }
                sum += bl;
                backward(m, &w, b, d->head, lowest);
                step(m, d->head, &cfg->opt, lr);
                pos[i] += b;
                s++;
                if (cfg->poll && now_seconds() - last_poll >= cfg->poll_interval) {
                    prog.epoch = e;
                    prog.step = s;
                    if (cfg->poll(cfg->poll_ctx, &prog)) st = DEN_EINTR;
                    last_poll = now_seconds();
                }
            }
        }
        if (st != DEN_OK) break;
        prog.loss = sum / (double)total;
        *loss_out = prog.loss;
        prog.epoch = e + 1;
        prog.step = 0;
        if (cfg->poll) {
            if (cfg->poll(cfg->poll_ctx, &prog)) st = DEN_EINTR;
            last_poll = now_seconds();
        }
    }
    for (int i = 0; order && i < n_data; i++) free(order[i]);
    free(order);
    free(pos);
    work_free(&w);
    return st;
}

/* ---- inference ------------------------------------------------------------------------------ */

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int block_finite(const den_model_layer *L) {
    return all_finite(L->gW, (int64_t)L->n_out * L->cols) && all_finite(L->gb, L->n_out);
}

#define EVAL_ROWS 256

den_status den_model_loss(den_model *m, const den_data *d, double *loss) {
    DEN_TRY(check_data(m, d));
    work w;
    DEN_TRY(work_new(&w, m, d->n < EVAL_ROWS ? (int)d->n : EVAL_ROWS, 0));
    double sum = 0.0;
    for (int64_t i = 0; i < d->n; i += w.B) {
        int b = (int)(d->n - i < w.B ? d->n - i : w.B);
        for (int j = 0; j < b; j++) w.rows[j] = i + j;
        load_batch(m, &w, d, b);
        forward(m, &w, b, d->head, 1);
        sum += head_loss(m, &w, b, d->head, 0);
    }
    work_free(&w);
    *loss = sum / (double)d->n;
    return isfinite(*loss) ? DEN_OK : DEN_EOVERFLOW;
}

den_status den_model_predict(den_model *m, const float *X, int64_t n, int n_features, int h, float *prob) {
    if (h < 0 || h >= m->n_heads || n < 0) return DEN_EINVAL;
    if (n == 0) return DEN_OK;
    den_data d = {X, n, n_features, NULL, NULL, -1};
    if (!inputs_fit(m, n_features)) return DEN_EINVAL;
    work w;
    DEN_TRY(work_new(&w, m, n < EVAL_ROWS ? (int)n : EVAL_ROWS, 0));
    const den_model_layer *H = &m->heads[h];
    for (int64_t i = 0; i < n; i += w.B) {
        int b = (int)(n - i < w.B ? n - i : w.B);
        for (int j = 0; j < b; j++) w.rows[j] = i + j;
        load_batch(m, &w, &d, b);
        forward(m, &w, b, h, 1);
        float *out = prob + i * H->n_out;
        if (H->kind == DEN_HEAD_SOFTMAX)
            den_softmax(out, w.logits, b, H->n_out);
        else
            den_sigmoid(out, w.logits, (int64_t)b * H->n_out);
        if (!all_finite(out, (int64_t)b * H->n_out)) {
            work_free(&w);
            return DEN_EOVERFLOW;
        }
    }
    work_free(&w);
    return DEN_OK;
}

den_status den_model_features(den_model *m, const float *X, int64_t n, int n_features, int h, float *out) {
    if (m->n_layers == 0 || h >= m->n_heads || n < 0 || !inputs_fit(m, n_features)) return DEN_EINVAL;
    if (n == 0) return DEN_OK;
    den_data d = {X, n, n_features, NULL, NULL, -1};
    int top = m->n_layers - 1, wt = width(m, h, top);
    work w;
    DEN_TRY(work_new(&w, m, n < EVAL_ROWS ? (int)n : EVAL_ROWS, 0));
    for (int64_t i = 0; i < n; i += w.B) {
        int b = (int)(n - i < w.B ? n - i : w.B);
        for (int j = 0; j < b; j++) w.rows[j] = i + j;
        load_batch(m, &w, &d, b);
        forward(m, &w, b, h, 0);
        memcpy(out + i * wt, w.act[top], (size_t)b * (size_t)wt * sizeof(float));
    }
    work_free(&w);
    return all_finite(out, n * wt) ? DEN_OK : DEN_EOVERFLOW;
}

/* ---- gradients ------------------------------------------------------------------------------ */

static void add_into(float *acc, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) acc[i] += x[i];
}

den_status den_model_gradients(den_model *m, const den_data *d) {
    if (!m->training) return DEN_EINVAL;
    DEN_TRY(check_data(m, d));
    int h = d->head, NL = m->n_layers;
    /* every gathered layer takes part; backward writes gW/gb per chunk, summed in mW/mb */
    int n_blocks = NL + 1;
    for (int i = 0; i < n_blocks; i++) {
        den_model_layer *L = i < NL ? &m->layers[i] : &m->heads[h];
        memset(L->mW, 0, (size_t)L->n_out * (size_t)L->cols * sizeof(float));
        memset(L->mb, 0, (size_t)L->n_out * sizeof(float));
    }
    work w;
    DEN_TRY(work_new(&w, m, d->n < EVAL_ROWS ? (int)d->n : EVAL_ROWS, 0));
    const den_model_layer *H = &m->heads[h];
    float scale = 1.0f / (float)d->n;
    for (int64_t i = 0; i < d->n; i += w.B) {
        int B = (int)(d->n - i < w.B ? d->n - i : w.B);
        for (int j = 0; j < B; j++) w.rows[j] = i + j;
        load_batch(m, &w, d, B);
        forward(m, &w, B, h, 1);
        if (H->kind == DEN_HEAD_SOFTMAX)
            den_softmax_ce(w.dlogits, w.prob, w.logits, w.ycls, B, H->n_out, scale);
        else
            den_sigmoid_bce(w.dlogits, w.prob, w.logits, w.ysig, B, H->n_out, scale);
        backward(m, &w, B, h, 0);
        for (int k = 0; k < n_blocks; k++) {
            den_model_layer *L = k < NL ? &m->layers[k] : &m->heads[h];
            for (int r = 0; r < (k < NL ? width(m, h, k) : L->n_out); r++)
                add_into(L->mW + (int64_t)r * L->cols, L->gW + (int64_t)r * L->cols, units_into(m, h, k) * L->span);
            add_into(L->mb, L->gb, k < NL ? width(m, h, k) : L->n_out);
        }
    }
    int finite = 1;
    for (int k = 0; k < n_blocks; k++) {
        den_model_layer *L = k < NL ? &m->layers[k] : &m->heads[h];
        memcpy(L->gW, L->mW, (size_t)L->n_out * (size_t)L->cols * sizeof(float));
        memcpy(L->gb, L->mb, (size_t)L->n_out * sizeof(float));
        finite = finite && block_finite(L);
    }
    work_free(&w);
    return finite ? DEN_OK : DEN_EOVERFLOW;
}

/* ---- Fisher information --------------------------------------------------------------------- */

static void square(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i] * src[i];
}

/* Push per-sample logit gradients (w->dlogits) down the network, accumulating the squares of
 * every sample's parameter gradients into every layer's gW/gb (dense layers: the
 * (d o d)^T (a o a) identity of den_dense_fisher_accumulate; conv layers: per sample). */
static void fisher_pass(den_model *m, work *w, int B, int h) {
    den_model_layer *H = &m->heads[h];
    int NL = m->n_layers;
    int top_cols = units_into(m, h, NL) * H->span;
    square(w->dsq, w->dlogits, (int64_t)B * H->n_out);
    den_dense_fisher_accumulate(H->gW, H->gb, w->dsq, w->sq[NL], B, top_cols, H->n_out, H->cols);
    if (NL == 0) return;
    float *d = w->d0, *dn = w->d1;
    den_dense_backward(d, NULL, NULL, w->dlogits, w->act[NL - 1], H->W, B, top_cols, H->n_out, H->cols);
    for (int l = NL - 1; l >= 0; l--) {
        den_model_layer *L = &m->layers[l];
        int wl = width(m, h, l), cin = units_into(m, h, l);
        float *dz = through_relu(m, w, B, h, l, d);
        if (L->op == DEN_OP_CONV) {
            den_conv_fisher_accumulate(L->gW, L->gb, w->ftmp, w->cols, dz, l > 0 ? w->act[l - 1] : w->x, B, cin,
                                       L->h, L->w, wl, L->kh, L->kw, L->cols);
        } else {
            square(w->dsq, dz, (int64_t)B * wl);
            den_dense_fisher_accumulate(L->gW, L->gb, w->dsq, w->sq[l], B, cin * L->span, wl, L->cols);
        }
        if (l > 0) layer_backward(m, w, B, h, l, dz, dn, NULL, NULL);
        float *t = d; d = dn; dn = t;
    }
}

static void zero_grads(den_model_layer *L) {
    memset(L->gW, 0, (size_t)L->n_out * (size_t)L->cols * sizeof(float));
    memset(L->gb, 0, (size_t)L->n_out * sizeof(float));
}

static void scale_grads(den_model_layer *L, float s) {
    for (int64_t i = 0; i < (int64_t)L->n_out * L->cols; i++) L->gW[i] *= s;
    for (int i = 0; i < L->n_out; i++) L->gb[i] *= s;
}

den_status den_model_fisher(den_model *m, const den_data *d, int mode) {
    if (!m->training || (mode != DEN_FISHER_EMPIRICAL && mode != DEN_FISHER_EXACT)) return DEN_EINVAL;
    DEN_TRY(check_data(m, d));
    int h = d->head, NL = m->n_layers;
    den_model_layer *H = &m->heads[h];
    int k = H->n_out;
    for (int l = 0; l < NL; l++) zero_grads(&m->layers[l]);
    zero_grads(H);
    work w;
    DEN_TRY(work_new(&w, m, d->n < EVAL_ROWS ? (int)d->n : EVAL_ROWS, 1));
    for (int64_t i = 0; i < d->n; i += w.B) {
        int B = (int)(d->n - i < w.B ? d->n - i : w.B);
        for (int j = 0; j < B; j++) w.rows[j] = i + j;
        load_batch(m, &w, d, B);
        forward(m, &w, B, h, 1);
        head_loss(m, &w, B, h, 0); /* probabilities into w.prob */
        /* squared inputs of the dense layers and the head (conv layers work per sample) */
        for (int l = 0; l <= NL; l++) {
            if (!w.sq[l]) continue;
            const float *in = l > 0 ? w.act[l - 1] : w.x;
            int64_t row = l > 0 ? (int64_t)width(m, h, l - 1) * m->layers[l - 1].out_pixels : (int64_t)m->n_input * m->in_pixels;
            square(w.sq[l], in, B * row);
        }
        int dirs = mode == DEN_FISHER_EXACT ? k : 1;
        for (int c = 0; c < dirs; c++) {
            for (int r = 0; r < B; r++) {
                const float *p = w.prob + (int64_t)r * k;
                float *g = w.dlogits + (int64_t)r * k;
                if (mode == DEN_FISHER_EMPIRICAL) {
                    /* the gradient of the sample's loss at its true target */
                    for (int j = 0; j < k; j++)
                        g[j] = H->kind == DEN_HEAD_SOFTMAX ? p[j] - (j == w.ycls[r]) : p[j] - w.ysig[(int64_t)r * k + j];
                } else if (H->kind == DEN_HEAD_SOFTMAX) {
                    /* class c drawn with probability p_c: weight its gradient by sqrt(p_c) */
                    float s = sqrtf(p[c]);
                    for (int j = 0; j < k; j++) g[j] = s * (p[j] - (j == c));
                } else {
                    /* independent outputs: E[(p_c - y_c)^2] = p_c (1 - p_c), cross terms vanish */
                    for (int j = 0; j < k; j++) g[j] = j == c ? sqrtf(p[j] * (1.0f - p[j])) : 0.0f;
                }
            }
            fisher_pass(m, &w, B, h);
        }
    }
    float inv = 1.0f / (float)d->n;
    int finite = 1;
    for (int l = 0; l < NL; l++) {
        scale_grads(&m->layers[l], inv);
        finite = finite && block_finite(&m->layers[l]);
    }
    scale_grads(H, inv);
    work_free(&w);
    return finite && block_finite(H) ? DEN_OK : DEN_EOVERFLOW;
}
