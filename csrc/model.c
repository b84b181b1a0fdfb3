/* model.c: gathering a compact den_model from a den_net and scattering it back (model.h). */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ---- one allocation, laid out in two passes (count, then assign) ---------------------------- */

typedef den_arena arena;
#define take den_take

/* What each block needs besides W and b; decided before layout. */
typedef struct {
    int mask, anchor, coef, row_flags;
} needs;

static void layout_layer(arena *a, den_model_layer *L, const needs *nd, int training) {
    size_t n = (size_t)L->n_out * (size_t)L->cols, r = (size_t)L->n_out;
    L->W = take(a, n, sizeof(float));
    L->b = take(a, r, sizeof(float));
    if (training) {
        L->gW = take(a, n, sizeof(float));
        L->gb = take(a, r, sizeof(float));
        L->mW = take(a, n, sizeof(float));
        L->vW = take(a, n, sizeof(float));
        L->mb = take(a, r, sizeof(float));
        L->vb = take(a, r, sizeof(float));
    }
    L->mask = nd->mask ? take(a, n, sizeof(float)) : NULL;
    L->row_on = nd->row_flags ? take(a, r, 1) : NULL;
    L->aW = nd->anchor ? take(a, n, sizeof(float)) : NULL;
    L->ab = nd->anchor ? take(a, r, sizeof(float)) : NULL;
    L->cW = nd->coef ? take(a, n, sizeof(float)) : NULL;
    L->cb = nd->coef ? take(a, r, sizeof(float)) : NULL;
    L->stamp = take(a, r, sizeof(int32_t));
    L->src_row = take(a, r, sizeof(int32_t));
    L->src_in = take(a, (size_t)L->n_in, sizeof(int32_t));
}

static size_t layout(den_model *m, char *base, const needs *layer_needs, const needs *head_needs) {
    arena a = {base, 0};
    for (int l = 0; l < m->n_layers; l++) layout_layer(&a, &m->layers[l], &layer_needs[l], m->training);
    for (int h = 0; h < m->n_heads; h++) layout_layer(&a, &m->heads[h], &head_needs[h], m->training);
    int *widths = take(&a, (size_t)m->n_heads * (size_t)(m->n_layers > 0 ? m->n_layers : 1), sizeof(int));
    int32_t *head_src = take(&a, (size_t)m->n_heads, sizeof(int32_t));
    if (base) {
        m->widths = widths;
        m->head_src = head_src;
    }
    return a.used + 64;
}

/* ---- gather ----------------------------------------------------------------------------- */

/* Net indices chosen from n candidates: flags (may be NULL = all) and stamp <= max_stamp. */
static int pick(int32_t *out, int n, const uint8_t *flags, const int32_t *stamp, int max_stamp) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (flags && !flags[i]) continue;
        if (stamp && max_stamp >= 0 && stamp[i] > max_stamp) continue;
        if (out) out[k] = i;
        k++;
    }
    return k;
}

/* Does the gathered block of net layer S (rows; NULL: rows 0..n_rows-1; input units ins) have a
 * masked-out entry? */
static int block_masked(const den_net_layer *S, const int32_t *rows, int n_rows, const int32_t *ins,
                        int n_ins) {
    int64_t ld = den_layer_cols(S);
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *m = S->mask + (int64_t)(rows ? rows[r] : r) * ld;
        for (int c = 0; c < n_ins; c++)
            for (int s = 0; s < S->span; s++)
                if (!m[(int64_t)ins[c] * S->span + s]) return 1;
    }
    return 0;
}

/* Copy the gathered block of a net matrix (ld = net columns) into compact dst. */
static void copy_block_f(float *dst, const float *src, int64_t ld, const int32_t *rows, int n_rows,
                         const int32_t *ins, int n_ins, int span) {
    for (int r = 0; r < n_rows; r++) {
        const float *s = src + (int64_t)rows[r] * ld;
        float *d = dst + (int64_t)r * n_ins * span;
        for (int c = 0; c < n_ins; c++) memcpy(d + (int64_t)c * span, s + (int64_t)ins[c] * span, (size_t)span * sizeof(float));
    }
}

/* Number of leading entries of idx that are < limit (idx is increasing). */
static int count_below(const int32_t *idx, int n, int limit) {
    int k = 0;
    while (k < n && idx[k] < limit) k++;
    return k;
}

/* Fill one compact block from net layer S (and anchor/coef layers A/C, possibly NULL). */
static void fill_block(den_model_layer *L, const den_net_layer *S, const den_net_layer *A,
                       const den_net_layer *C, const uint8_t *train, int trainable) {
    int64_t ld = den_layer_cols(S);
    copy_block_f(L->W, S->W, ld, L->src_row, L->n_out, L->src_in, L->n_in, L->span);
    for (int r = 0; r < L->n_out; r++) {
        L->b[r] = S->b[L->src_row[r]];
        L->stamp[r] = S->stamp[L->src_row[r]];
    }
    if (L->mask) {
        for (int r = 0; r < L->n_out; r++) {
            const uint8_t *m = S->mask + (int64_t)L->src_row[r] * ld;
            float *d = L->mask + (int64_t)r * L->cols;
            for (int c = 0; c < L->n_in; c++)
                for (int s = 0; s < L->span; s++) d[(int64_t)c * L->span + s] = (float)m[(int64_t)L->src_in[c] * L->span + s];
        }
    }
    L->n_on = 0;
    for (int r = 0; r < L->n_out; r++) {
        int on = trainable && (!train || train[L->src_row[r]]);
        if (L->row_on) L->row_on[r] = (uint8_t)on;
        L->n_on += on;
    }
    if (L->aW) {
        int64_t ald = den_layer_cols(A);
        L->arows = count_below(L->src_row, L->n_out, A->n_out);
        int acin = count_below(L->src_in, L->n_in, A->n_in);
        L->acols = acin * L->span;
        memset(L->aW, 0, (size_t)L->n_out * L->cols * sizeof(float));
        memset(L->ab, 0, (size_t)L->n_out * sizeof(float));
        for (int r = 0; r < L->arows; r++) {
            const float *s = A->W + (int64_t)L->src_row[r] * ald;
            for (int c = 0; c < acin; c++)
                memcpy(L->aW + (int64_t)r * L->cols + (int64_t)c * L->span, s + (int64_t)L->src_in[c] * L->span, (size_t)L->span * sizeof(float));
            L->ab[r] = A->b[L->src_row[r]];
        }
        if (L->cW) {
            memset(L->cW, 0, (size_t)L->n_out * L->cols * sizeof(float));
            memset(L->cb, 0, (size_t)L->n_out * sizeof(float));
            for (int r = 0; r < L->arows; r++) {
                const float *s = C->W + (int64_t)L->src_row[r] * ald;
                for (int c = 0; c < acin; c++)
                    memcpy(L->cW + (int64_t)r * L->cols + (int64_t)c * L->span, s + (int64_t)L->src_in[c] * L->span, (size_t)L->span * sizeof(float));
                L->cb[r] = C->b[L->src_row[r]];
            }
        }
    }
    if (L->gW) {
        memset(L->gW, 0, (size_t)L->n_out * L->cols * sizeof(float));
        memset(L->gb, 0, (size_t)L->n_out * sizeof(float));
        memset(L->mW, 0, (size_t)L->n_out * L->cols * sizeof(float));
        memset(L->vW, 0, (size_t)L->n_out * L->cols * sizeof(float));
        memset(L->mb, 0, (size_t)L->n_out * sizeof(float));
        memset(L->vb, 0, (size_t)L->n_out * sizeof(float));
    }
    L->steps = 0;
}

static int same_shape(const den_net_layer *a, const den_net_layer *b) {
    return a->n_out == b->n_out && a->n_in == b->n_in && a->span == b->span;
}

static den_status check_gather(const den_net *net, const den_gather *g) {
    if (g->n_heads < 0 || (g->n_heads > 0 && !g->heads)) return DEN_EINVAL;
    if (g->head_only && g->n_heads < 1) return DEN_EINVAL;
    for (int i = 0; i < g->n_heads; i++)
        if (g->heads[i] < 0 || g->heads[i] >= net->n_heads) return DEN_EINVAL;
    if (g->coef && !g->anchor) return DEN_EINVAL;
    if (g->inputs && g->head_only) return DEN_EINVAL;
    if (g->anchor) {
        const den_net *A = g->anchor;
        if (A->n_layers != net->n_layers || A->n_input != net->n_input) return DEN_EINVAL;
        for (int l = 0; l < net->n_layers; l++) {
            const den_net_layer *a = &A->layers[l], *s = &net->layers[l];
            if (a->n_out > s->n_out || a->n_in > s->n_in || a->span != s->span) return DEN_EINVAL;
            if (g->coef && (g->coef->n_layers != A->n_layers || !same_shape(&g->coef->layers[l], a)))
                return DEN_EINVAL;
        }
    }
    return DEN_OK;
}

den_status den_model_gather(den_model **out, const den_net *net, const den_gather *g) {
    *out = NULL;
    DEN_TRY(check_gather(net, g));
    den_model *m = calloc(1, sizeof *m);
    if (!m) return DEN_ENOMEM;
    int NL = g->head_only ? 0 : net->n_layers;
    int top = net->n_layers - 1;
    m->n_layers = NL;
    m->n_heads = g->n_heads;
    m->training = g->training;
    m->use_stamps = g->use_stamps;
    m->layers = calloc((size_t)(NL > 0 ? NL : 1), sizeof *m->layers);
    m->heads = calloc((size_t)(g->n_heads > 0 ? g->n_heads : 1), sizeof *m->heads);
    needs *nds = calloc((size_t)(NL + g->n_heads + 1), sizeof *nds);
    /* Scratch index lists: units of every net layer, and the input features. */
    int32_t **idx = calloc((size_t)net->n_layers + 1, sizeof *idx);
    int *cnt = calloc((size_t)net->n_layers + 1, sizeof *cnt);
    den_status st = DEN_ENOMEM;
    if (!m->layers || !m->heads || !nds || !idx || !cnt) goto fail;
    /* idx[0] = input units (features or channels); idx[l + 1] = units of net layer l */
    int n_in0 = net->layers[0].n_in;
    idx[0] = malloc((size_t)n_in0 * sizeof(int32_t) + 1);
    if (!idx[0]) goto fail;
    cnt[0] = pick(idx[0], n_in0, g->inputs, NULL, -1);
    for (int l = 0; l < net->n_layers; l++) {
        const den_net_layer *S = &net->layers[l];
        idx[l + 1] = malloc((size_t)S->n_out * sizeof(int32_t) + 1);
        if (!idx[l + 1]) goto fail;
        cnt[l + 1] = pick(idx[l + 1], S->n_out, g->units ? g->units[l] : NULL, S->stamp, g->max_stamp);
    }
    /* sizes and needs */
    for (int l = 0; l < NL; l++) {
        const den_net_layer *S = &net->layers[l];
        den_model_layer *L = &m->layers[l];
        L->n_out = cnt[l + 1];
        L->n_in = cnt[l];
        L->span = S->span;
        L->cols = L->n_in * L->span;
        L->reg = g->layer_reg;
        L->op = S->op;
        L->h = S->h;
        L->w = S->w;
        L->kh = S->kh;
        L->kw = S->kw;
        L->pool = S->pool;
        L->out_pixels = den_layer_out_pixels(S);
        L->in_pixels = l == 0 ? net->in_h * net->in_w : m->layers[l - 1].out_pixels;
        nds[l].mask = block_masked(S, idx[l + 1], cnt[l + 1], idx[l], cnt[l]);
        nds[l].row_flags = g->training;
        nds[l].anchor = g->training && g->anchor != NULL;
        nds[l].coef = g->training && g->coef != NULL;
    }
    for (int h = 0; h < g->n_heads; h++) {
        const den_net_layer *S = &net->heads[g->heads[h]];
        den_model_layer *H = &m->heads[h];
        H->n_out = S->n_out;
        H->n_in = cnt[top + 1];
        H->span = S->span;
        H->cols = H->n_in * H->span;
        H->kind = S->kind;
        H->reg = g->head_reg;
        H->op = DEN_OP_DENSE;
        H->pool = 1;
        H->in_pixels = H->out_pixels = 1;
        nds[NL + h].mask = block_masked(S, NULL, S->n_out, idx[top + 1], cnt[top + 1]);
        nds[NL + h].row_flags = g->training;
    }
    size_t bytes = layout(m, NULL, nds, nds + NL);
    m->mem = calloc(1, bytes);
    if (!m->mem) goto fail;
    layout(m, (char *)(((uintptr_t)m->mem + 63) & ~(uintptr_t)63), nds, nds + NL);
    m->n_input = NL > 0 ? cnt[0] : cnt[top + 1];
    m->in_pixels = NL > 0 ? net->in_h * net->in_w : 1;
    /* fill */
    for (int l = 0; l < NL; l++) {
        den_model_layer *L = &m->layers[l];
        memcpy(L->src_row, idx[l + 1], (size_t)L->n_out * sizeof(int32_t));
        memcpy(L->src_in, idx[l], (size_t)L->n_in * sizeof(int32_t));
        fill_block(L, &net->layers[l], g->anchor ? &g->anchor->layers[l] : NULL,
                   g->coef ? &g->coef->layers[l] : NULL, g->train ? g->train[l] : NULL, g->training);
    }
    for (int h = 0; h < g->n_heads; h++) {
        den_model_layer *H = &m->heads[h];
        for (int r = 0; r < H->n_out; r++) H->src_row[r] = r;
        memcpy(H->src_in, idx[top + 1], (size_t)H->n_in * sizeof(int32_t));
        fill_block(H, &net->heads[g->heads[h]], NULL, NULL, NULL,
                   g->training && (!g->head_train || g->head_train[h]));
        m->head_src[h] = g->heads[h];
        /* units of each layer this head's task reads: a prefix, since stamps are sorted */
        int task = den_head_task(&net->heads[g->heads[h]]);
        for (int l = 0; l < NL; l++) {
            const den_model_layer *L = &m->layers[l];
            int w = L->n_out;
            if (g->use_stamps)
                while (w > 0 && L->stamp[w - 1] > task) w--;
            m->widths[h * NL + l] = w;
        }
    }
    st = DEN_OK;
fail:
    for (int l = 0; idx && l <= net->n_layers; l++) free(idx[l]);
    free(idx);
    free(cnt);
    free(nds);
    if (st != DEN_OK) {
        den_model_free(m);
        return st;
    }
    *out = m;
    return DEN_OK;
}

void den_model_free(den_model *m) {
    if (!m) return;
    free(m->mem);
    free(m->layers);
    free(m->heads);
    free(m);
}

/* ---- scatter ---------------------------------------------------------------------------- */

static void scatter_block(const den_model_layer *L, den_net_layer *S, int grads) {
    const float *W = grads ? L->gW : L->W;
    const float *b = grads ? L->gb : L->b;
    int64_t ld = den_layer_cols(S);
    for (int r = 0; r < L->n_out; r++) {
        if (L->row_on ? !L->row_on[r] : L->n_on == 0) continue;
        float *d = S->W + (int64_t)L->src_row[r] * ld;
        const float *s = W + (int64_t)r * L->cols;
        for (int c = 0; c < L->n_in; c++)
            memcpy(d + (int64_t)L->src_in[c] * L->span, s + (int64_t)c * L->span, (size_t)L->span * sizeof(float));
        S->b[L->src_row[r]] = b[r];
    }
}

static int layer_fits(const den_model_layer *L, const den_net_layer *S) {
    for (int r = 0; r < L->n_out; r++)
        if (L->src_row[r] >= S->n_out) return 0;
    for (int c = 0; c < L->n_in; c++)
        if (L->src_in[c] >= S->n_in) return 0;
    return L->span == S->span;
}

den_status den_model_scatter(const den_model *m, den_net *net, int grads) {
    if (!m->training) return DEN_EINVAL;
    /* Check everything first so that a mismatch leaves the net untouched. */
    if (m->n_layers > 0 && m->n_layers != net->n_layers) return DEN_EINVAL;
    for (int l = 0; l < m->n_layers; l++)
        if (!layer_fits(&m->layers[l], &net->layers[l])) return DEN_EINVAL;
    for (int h = 0; h < m->n_heads; h++)
        if (m->head_src[h] >= net->n_heads || !layer_fits(&m->heads[h], &net->heads[m->head_src[h]]))
            return DEN_EINVAL;
    for (int l = 0; l < m->n_layers; l++) scatter_block(&m->layers[l], &net->layers[l], grads);
    for (int h = 0; h < m->n_heads; h++) scatter_block(&m->heads[h], &net->heads[m->head_src[h]], grads);
    return DEN_OK;
}
