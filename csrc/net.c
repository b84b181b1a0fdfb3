/* net.c: storage and structural algorithms of the growable network (see net.h). */
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* Largest unit count per layer and column count per row we accept: keeps every product of two
 * sizes inside int64 and every BLAS dimension inside int. */
#define DEN_MAX_UNITS (1 << 24)

/* calloc that never returns NULL for a zero-sized request. */
static void *zalloc(int64_t n, size_t size) {
    if (n < 0) return NULL;
    return calloc(n > 0 ? (size_t)n : 1, size);
}

static void layer_free(den_net_layer *L) {
    free(L->W);
    free(L->b);
    free(L->mask);
    free(L->stamp);
    memset(L, 0, sizeof *L);
}

/* Allocate zeroed buffers for L; geometry (op, h, w, kh, kw, pool) is taken from `like`, or
 * dense when like is NULL. */
static den_status layer_alloc(den_net_layer *L, int n_out, int n_in, int span, int kind, const den_net_layer *like) {
    int64_t cols = (int64_t)n_in * span;
    if (n_out < 0 || n_in < 0 || span < 1 || n_out > DEN_MAX_UNITS || !den_fits_int(cols) ||
        !den_fits_int((int64_t)n_out * cols))
        return DEN_ETOOBIG;
    memset(L, 0, sizeof *L);
    if (like) {
        L->op = like->op;
        L->h = like->h;
        L->w = like->w;
        L->kh = like->kh;
        L->kw = like->kw;
        L->pool = like->pool;
    } else {
        L->op = DEN_OP_DENSE;
        L->pool = 1;
    }
    L->n_out = n_out;
    L->n_in = n_in;
    L->span = span;
    L->kind = kind;
    L->W = zalloc((int64_t)n_out * cols, sizeof(float));
    L->b = zalloc(n_out, sizeof(float));
    L->mask = zalloc((int64_t)n_out * cols, 1);
    L->stamp = zalloc(n_out, sizeof(int32_t));
    if (!L->W || !L->b || !L->mask || !L->stamp) {
        layer_free(L);
        return DEN_ENOMEM;
    }
    return DEN_OK;
}

static den_status layer_clone(den_net_layer *dst, const den_net_layer *src) {
    DEN_TRY(layer_alloc(dst, src->n_out, src->n_in, src->span, src->kind, src));
    int64_t n = (int64_t)src->n_out * den_layer_cols(src);
    memcpy(dst->W, src->W, (size_t)n * sizeof(float));
    memcpy(dst->b, src->b, (size_t)src->n_out * sizeof(float));
    memcpy(dst->mask, src->mask, (size_t)n);
    memcpy(dst->stamp, src->stamp, (size_t)src->n_out * sizeof(int32_t));
    return DEN_OK;
}

/* Random normal init of rows [r0, n_out) over their allowed columns, std = sqrt(gain/fan_in). */
static void init_rows(den_net_layer *L, int r0, double gain, den_rng *rng) {
    int64_t cols = den_layer_cols(L);
    for (int r = r0; r < L->n_out; r++) {
        float *w = L->W + (int64_t)r * cols;
        const uint8_t *m = L->mask + (int64_t)r * cols;
        int64_t fan_in = 0;
        for (int64_t c = 0; c < cols; c++) fan_in += m[c];
        double std = fan_in > 0 ? sqrt(gain / (double)fan_in) : 0.0;
        for (int64_t c = 0; c < cols; c++) w[c] = m[c] ? (float)(std * den_rng_normal(rng)) : 0.0f;
        L->b[r] = 0.0f;
    }
}

/* Re-layout L so that it has n_out rows and n_in input units, copying the overlapping block and
 * zeroing the rest (mask 0, stamp 0 for new rows). */
static den_status layer_resize(den_net_layer *L, int n_out, int n_in) {
    den_net_layer N;
    DEN_TRY(layer_alloc(&N, n_out, n_in, L->span, L->kind, L));
    int rows = n_out < L->n_out ? n_out : L->n_out;
    int64_t oc = den_layer_cols(L), nc = den_layer_cols(&N);
    int64_t cc = oc < nc ? oc : nc;
    for (int r = 0; r < rows; r++) {
        memcpy(N.W + r * nc, L->W + r * oc, (size_t)cc * sizeof(float));
        memcpy(N.mask + r * nc, L->mask + r * oc, (size_t)cc);
    }
    memcpy(N.b, L->b, (size_t)rows * sizeof(float));
    memcpy(N.stamp, L->stamp, (size_t)rows * sizeof(int32_t));
    layer_free(L);
    *L = N;
    return DEN_OK;
}

/* The layer (or heads) reading layer l's units. */
static int reads_layer_count(const den_net *net, int l) { return l + 1 < net->n_layers ? 1 : net->n_heads; }
static den_net_layer *reader(den_net *net, int l, int i) {
    return l + 1 < net->n_layers ? &net->layers[l + 1] : &net->heads[i];
}

static int max_stamp(const den_net *net) {
    int m = 0;
    for (int l = 0; l < net->n_layers; l++) {
        const den_net_layer *L = &net->layers[l];
        if (L->n_out > 0 && L->stamp[L->n_out - 1] > m) m = L->stamp[L->n_out - 1];
    }
    for (int h = 0; h < net->n_heads; h++)
        if (den_head_task(&net->heads[h]) > m) m = den_head_task(&net->heads[h]);
    return m;
}

den_status den_net_new(den_net **out, int in_c, int in_h, int in_w, int n_conv, const den_conv_spec *conv,
                       int n_dense, const int *widths, uint64_t seed) {
    *out = NULL;
    int n_layers = n_conv + n_dense;
    if (in_c < 1 || in_h < 1 || in_w < 1 || n_conv < 0 || n_dense < 1 || n_layers > 64) return DEN_EINVAL;
    if ((int64_t)in_c * in_h * in_w > DEN_MAX_UNITS) return DEN_ETOOBIG;
    int h = in_h, w = in_w;
    for (int l = 0; l < n_conv; l++) {
        const den_conv_spec *c = &conv[l];
        if (c->filters < 1 || c->kh < 1 || c->kw < 1 || c->kh % 2 == 0 || c->kw % 2 == 0 || c->pool < 1 ||
            h / c->pool < 1 || w / c->pool < 1)
            return DEN_EINVAL;
        h /= c->pool;
        w /= c->pool;
    }
    for (int l = 0; l < n_dense; l++)
        if (widths[l] < 1) return DEN_EINVAL;
    den_net *net = calloc(1, sizeof *net);
    if (!net) return DEN_ENOMEM;
    net->n_input = in_c * in_h * in_w;
    net->in_c = in_c;
    net->in_h = in_h;
    net->in_w = in_w;
    net->n_layers = n_layers;
    net->layers = calloc((size_t)n_layers, sizeof *net->layers);
    if (!net->layers) {
        free(net);
        return DEN_ENOMEM;
    }
    den_rng rng;
    den_rng_seed(&rng, seed);
    int units = in_c, pixels = in_h * in_w; /* what the next layer reads */
    h = in_h;
    w = in_w;
    for (int l = 0; l < n_layers; l++) {
        den_net_layer geo = {0};
        int n_out, span;
        if (l < n_conv) {
            const den_conv_spec *c = &conv[l];
            geo = (den_net_layer){.op = DEN_OP_CONV, .h = h, .w = w, .kh = c->kh, .kw = c->kw, .pool = c->pool};
            n_out = c->filters;
            span = c->kh * c->kw;
        } else {
            geo = (den_net_layer){.op = DEN_OP_DENSE, .pool = 1};
            n_out = widths[l - n_conv];
            span = pixels; /* a dense layer reads whole feature maps (1 pixel each for vectors) */
        }
        den_status s = layer_alloc(&net->layers[l], n_out, units, span, 0, &geo);
        if (s != DEN_OK) {
            den_net_free(net);
            return s;
        }
        den_net_layer *L = &net->layers[l];
        memset(L->mask, 1, (size_t)((int64_t)L->n_out * den_layer_cols(L)));
        init_rows(L, 0, 2.0, &rng);
        units = n_out;
        if (l < n_conv) {
            h /= L->pool;
            w /= L->pool;
            pixels = h * w;
        } else {
            pixels = 1;
        }
    }
    *out = net;
    return DEN_OK;
}

void den_net_free(den_net *net) {
    if (!net) return;
    for (int l = 0; l < net->n_layers && net->layers; l++) layer_free(&net->layers[l]);
    for (int h = 0; h < net->n_heads; h++) layer_free(&net->heads[h]);
    free(net->layers);
    free(net->heads);
    free(net);
}

den_status den_net_clone(den_net **out, const den_net *src) {
    *out = NULL;
    den_net *net = calloc(1, sizeof *net);
    if (!net) return DEN_ENOMEM;
    net->n_input = src->n_input;
    net->in_c = src->in_c;
    net->in_h = src->in_h;
    net->in_w = src->in_w;
    net->layers = calloc((size_t)src->n_layers, sizeof *net->layers);
    net->heads = zalloc(src->n_heads, sizeof *net->heads);
    if (!net->layers || !net->heads) {
        den_net_free(net);
        return DEN_ENOMEM;
    }
    for (int l = 0; l < src->n_layers; l++) {
        den_status s = layer_clone(&net->layers[l], &src->layers[l]);
        if (s != DEN_OK) {
            den_net_free(net);
            return s;
        }
        net->n_layers = l + 1;
    }
    for (int h = 0; h < src->n_heads; h++) {
        den_status s = layer_clone(&net->heads[h], &src->heads[h]);
        if (s != DEN_OK) {
            den_net_free(net);
            return s;
        }
        net->n_heads = h + 1;
    }
    *out = net;
    return DEN_OK;
}

den_status den_net_add_head(den_net *net, int kind, int k, int task, uint64_t seed, int *index) {
    if ((kind != DEN_HEAD_SIGMOID && kind != DEN_HEAD_SOFTMAX) || k < 1 || k > DEN_MAX_UNITS ||
        task < 0 || (kind == DEN_HEAD_SOFTMAX && k < 2))
        return DEN_EINVAL;
    const den_net_layer *top = &net->layers[net->n_layers - 1];
    den_net_layer H;
    DEN_TRY(layer_alloc(&H, k, top->n_out, 1, kind, NULL)); /* heads read dense top units */
    for (int r = 0; r < k; r++) {
        H.stamp[r] = task;
        for (int c = 0; c < top->n_out; c++)
            memset(H.mask + (int64_t)r * den_layer_cols(&H) + (int64_t)c * H.span,
                   top->stamp[c] <= task, (size_t)H.span);
    }
    den_rng rng;
    den_rng_seed(&rng, seed);
    init_rows(&H, 0, 1.0, &rng);
    den_net_layer *heads = realloc(net->heads, (size_t)(net->n_heads + 1) * sizeof *heads);
    if (!heads) {
        layer_free(&H);
        return DEN_ENOMEM;
    }
    net->heads = heads;
    net->heads[net->n_heads] = H;
    *index = net->n_heads++;
    return DEN_OK;
}

/* Append `count` input units to a reader of new units. Readers born before `stamp` may not
 * read them (mask 0, weight 0); readers born at `stamp` (new units of the layer above, the
 * task's own head) get random weights like any new weight, N(0, gain / fan_in): a new unit
 * whose outgoing weights started at zero would get no gradient at all. */
static den_status append_input_units(den_net_layer *R, int count, int stamp, double gain, den_rng *rng) {
    int old_in = R->n_in;
    DEN_TRY(layer_resize(R, R->n_out, old_in + count));
    int64_t cols = den_layer_cols(R), first = (int64_t)old_in * R->span, n = (int64_t)count * R->span;
    for (int r = 0; r < R->n_out; r++) {
        if (R->stamp[r] < stamp) continue;
        uint8_t *m = R->mask + (int64_t)r * cols;
        float *w = R->W + (int64_t)r * cols;
        memset(m + first, 1, (size_t)n);
        int64_t fan_in = 0;
        for (int64_t c = 0; c < cols; c++) fan_in += m[c];
        double std = sqrt(gain / (double)fan_in);
        for (int64_t c = first; c < first + n; c++) w[c] = (float)(std * den_rng_normal(rng));
    }
    return DEN_OK;
}

den_status den_net_add_units(den_net *net, const int *count, int stamp, uint64_t seed) {
    if (stamp < max_stamp(net)) return DEN_EINVAL;
    for (int l = 0; l < net->n_layers; l++)
        if (count[l] < 0 || (int64_t)net->layers[l].n_out + count[l] > DEN_MAX_UNITS) return DEN_EINVAL;
    den_rng rng;
    den_rng_seed(&rng, seed);
    for (int l = 0; l < net->n_layers; l++) {
        if (count[l] == 0) continue;
        den_net_layer *L = &net->layers[l];
        int r0 = L->n_out;
        DEN_TRY(layer_resize(L, r0 + count[l], L->n_in));
        int64_t cols = den_layer_cols(L);
        for (int r = r0; r < L->n_out; r++) L->stamp[r] = stamp;
        memset(L->mask + (int64_t)r0 * cols, 1, (size_t)((int64_t)count[l] * cols));
        init_rows(L, r0, 2.0, &rng);
        for (int i = 0; i < reads_layer_count(net, l); i++)
            DEN_TRY(append_input_units(reader(net, l, i), count[l], stamp, l + 1 < net->n_layers ? 2.0 : 1.0, &rng));
    }
    return DEN_OK;
}

/* Keep rows with keep[r] != 0. */
static den_status keep_rows(den_net_layer *L, const uint8_t *keep) {
    int64_t cols = den_layer_cols(L);
    int n = 0;
    for (int r = 0; r < L->n_out; r++) {
        if (!keep[r]) continue;
        if (n != r) {
            memmove(L->W + (int64_t)n * cols, L->W + (int64_t)r * cols, (size_t)cols * sizeof(float));
            memmove(L->mask + (int64_t)n * cols, L->mask + (int64_t)r * cols, (size_t)cols);
            L->b[n] = L->b[r];
            L->stamp[n] = L->stamp[r];
        }
        n++;
    }
    L->n_out = n; /* buffers keep their (larger) allocation */
    return DEN_OK;
}

/* Keep input units with keep[c] != 0 (columns move left within each row). */
static den_status keep_input_units(den_net_layer *L, const uint8_t *keep) {
    int64_t oc = den_layer_cols(L);
    int n_in = 0;
    for (int c = 0; c < L->n_in; c++) n_in += keep[c] != 0;
    int64_t nc = (int64_t)n_in * L->span;
    for (int r = 0; r < L->n_out; r++) {
        float *w = L->W + (int64_t)r * oc;
        uint8_t *m = L->mask + (int64_t)r * oc;
        float *wd = L->W + (int64_t)r * nc;
        uint8_t *md = L->mask + (int64_t)r * nc;
        int64_t j = 0;
        for (int c = 0; c < L->n_in; c++) {
            if (!keep[c]) continue;
            /* destination never passes source: rows only shrink */
            memmove(wd + j, w + (int64_t)c * L->span, (size_t)L->span * sizeof(float));
            memmove(md + j, m + (int64_t)c * L->span, (size_t)L->span);
            j += L->span;
        }
    }
    L->n_in = n_in;
    return DEN_OK;
}

den_status den_net_remove_units(den_net *net, const uint8_t *const *keep) {
    for (int l = 0; l < net->n_layers; l++) {
        if (!keep[l]) continue;
        int kept = 0;
        for (int r = 0; r < net->layers[l].n_out; r++) kept += keep[l][r] != 0;
        if (kept == 0) return DEN_EINVAL; /* a layer may not become empty */
    }
    for (int l = 0; l < net->n_layers; l++) {
        if (!keep[l]) continue;
        for (int i = 0; i < reads_layer_count(net, l); i++)
            DEN_TRY(keep_input_units(reader(net, l, i), keep[l]));
        DEN_TRY(keep_rows(&net->layers[l], keep[l]));
    }
    return DEN_OK;
}

den_status den_net_duplicate_units(den_net *net, const uint8_t *const *dup, int stamp) {
    if (stamp < max_stamp(net)) return DEN_EINVAL;
    for (int l = 0; l < net->n_layers; l++) {
        if (!dup[l]) continue;
        den_net_layer *L = &net->layers[l];
        int n0 = L->n_out, count = 0;
        for (int i = 0; i < n0; i++) count += dup[l][i] != 0;
        if (count == 0) continue;
        if ((int64_t)n0 + count > DEN_MAX_UNITS) return DEN_ETOOBIG;
        int *src = malloc((size_t)count * sizeof(int));
        if (!src) return DEN_ENOMEM;
        for (int i = 0, j = 0; i < n0; i++)
            if (dup[l][i]) src[j++] = i;
        den_status s = layer_resize(L, n0 + count, L->n_in);
        if (s == DEN_OK) {
            int64_t cols = den_layer_cols(L);
            for (int j = 0; j < count; j++) {
                int r = n0 + j;
                memcpy(L->W + (int64_t)r * cols, L->W + (int64_t)src[j] * cols, (size_t)cols * sizeof(float));
                memcpy(L->mask + (int64_t)r * cols, L->mask + (int64_t)src[j] * cols, (size_t)cols);
                L->b[r] = L->b[src[j]];
                L->stamp[r] = stamp;
            }
            for (int i = 0; i < reads_layer_count(net, l) && s == DEN_OK; i++) {
                den_net_layer *R = reader(net, l, i);
                int old_in = R->n_in;
                s = layer_resize(R, R->n_out, old_in + count);
                if (s != DEN_OK) break;
                int copy = l + 1 < net->n_layers || den_head_task(R) >= stamp;
                if (!copy) continue;
                int64_t rc = den_layer_cols(R);
                for (int r = 0; r < R->n_out; r++)
                    for (int j = 0; j < count; j++) {
                        int64_t to = (int64_t)r * rc + (int64_t)(old_in + j) * R->span;
                        int64_t from = (int64_t)r * rc + (int64_t)src[j] * R->span;
                        memcpy(R->W + to, R->W + from, (size_t)R->span * sizeof(float));
                        memcpy(R->mask + to, R->mask + from, (size_t)R->span);
                    }
            }
        }
        free(src);
        DEN_TRY(s);
    }
    return DEN_OK;
}

den_status den_net_restore_units(den_net *net, const den_net *prev, const uint8_t *const *which) {
    if (prev->n_layers != net->n_layers || prev->n_input != net->n_input) return DEN_EINVAL;
    for (int l = 0; l < net->n_layers; l++) {
        if (!which[l]) continue;
        den_net_layer *L = &net->layers[l];
        const den_net_layer *P = &prev->layers[l];
        if (P->n_in > L->n_in || P->span != L->span) return DEN_EINVAL;
        for (int i = 0; i < L->n_out; i++)
            if (which[l][i] && i >= P->n_out) return DEN_EINVAL;
    }
    for (int l = 0; l < net->n_layers; l++) {
        if (!which[l]) continue;
        den_net_layer *L = &net->layers[l];
        const den_net_layer *P = &prev->layers[l];
        int64_t cols = den_layer_cols(L), pc = den_layer_cols(P);
        for (int i = 0; i < L->n_out; i++) {
            if (!which[l][i]) continue;
            float *w = L->W + (int64_t)i * cols;
            const uint8_t *m = L->mask + (int64_t)i * cols;
            memcpy(w, P->W + (int64_t)i * pc, (size_t)pc * sizeof(float));
            memset(w + pc, 0, (size_t)(cols - pc) * sizeof(float));
            for (int64_t c = 0; c < pc; c++)
                if (!m[c]) w[c] = 0.0f; /* the mask invariant holds whatever prev was */
            L->b[i] = P->b[i];
        }
    }
    return DEN_OK;
}

den_status den_net_drift(const den_net *net, const den_net *prev, int layer, float *rho) {
    if (layer < 0 || layer >= net->n_layers || prev->n_layers != net->n_layers) return DEN_EINVAL;
    const den_net_layer *L = &net->layers[layer];
    const den_net_layer *P = &prev->layers[layer];
    if (P->n_in > L->n_in || P->span != L->span) return DEN_EINVAL;
    int64_t cols = den_layer_cols(L), pc = den_layer_cols(P);
    for (int i = 0; i < L->n_out; i++) {
        if (i >= P->n_out) {
            rho[i] = 0.0f;
            continue;
        }
        const float *w = L->W + (int64_t)i * cols;
        const float *p = P->W + (int64_t)i * pc;
        double s = 0.0;
        for (int64_t c = 0; c < pc; c++) s += ((double)w[c] - p[c]) * ((double)w[c] - p[c]);
        for (int64_t c = pc; c < cols; c++) s += (double)w[c] * w[c];
        rho[i] = (float)sqrt(s);
    }
    return DEN_OK;
}

/* Does row r of L have a nonzero weight from input unit c? */
static int reads_unit(const den_net_layer *L, int r, int c) {
    const float *w = L->W + (int64_t)r * den_layer_cols(L) + (int64_t)c * L->span;
    for (int s = 0; s < L->span; s++)
        if (w[s] != 0.0f) return 1;
    return 0;
}

den_status den_net_select(const den_net *net, int h, uint8_t *const *units, uint8_t *inputs) {
    if (h < 0 || h >= net->n_heads) return DEN_EINVAL;
    const den_net_layer *H = &net->heads[h];
    int task = den_head_task(H);
    int top = net->n_layers - 1;
    for (int l = 0; l < net->n_layers; l++) memset(units[l], 0, (size_t)net->layers[l].n_out);
    for (int c = 0; c < H->n_in; c++) {
        if (net->layers[top].stamp[c] > task) continue;
        for (int r = 0; r < H->n_out && !units[top][c]; r++) units[top][c] = (uint8_t)reads_unit(H, r, c);
    }
    for (int l = top; l >= 0; l--) {
        const den_net_layer *L = &net->layers[l];
        uint8_t *below = l > 0 ? units[l - 1] : inputs;
        if (l == 0) memset(inputs, 0, (size_t)L->n_in);
        for (int c = 0; c < L->n_in; c++) {
            if (l > 0 && net->layers[l - 1].stamp[c] > task) continue;
            for (int r = 0; r < L->n_out && !below[c]; r++)
                if (units[l][r]) below[c] = (uint8_t)reads_unit(L, r, c);
        }
    }
    return DEN_OK;
}

void den_net_prefix(const den_net *net, int task, int *widths) {
    for (int l = 0; l < net->n_layers; l++) {
        const den_net_layer *L = &net->layers[l];
        int n = L->n_out;
        if (task >= 0)
            while (n > 0 && L->stamp[n - 1] > task) n--;
        widths[l] = n;
    }
}

static int64_t nonzero_block(const den_net_layer *L, int rows, int64_t cols) {
    int64_t n = 0, ld = den_layer_cols(L);
    for (int r = 0; r < rows; r++) {
        const float *w = L->W + (int64_t)r * ld;
        for (int64_t c = 0; c < cols; c++) n += w[c] != 0.0f;
        n += L->b[r] != 0.0f;
    }
    return n;
}

int64_t den_net_nonzero(const den_net *net, int task) {
    int widths[64];
    den_net_prefix(net, task, widths);
    int64_t n = 0;
    int below = net->layers[0].n_in;
    for (int l = 0; l < net->n_layers; l++) {
        const den_net_layer *L = &net->layers[l];
        n += nonzero_block(L, widths[l], (int64_t)below * L->span);
        below = widths[l];
    }
    for (int h = 0; h < net->n_heads; h++) {
        const den_net_layer *H = &net->heads[h];
        if (task >= 0 && den_head_task(H) != task) continue;
        n += nonzero_block(H, H->n_out, (int64_t)below * H->span);
    }
    return n;
}

den_status den_net_dead_units(const den_net *net, int layer, uint8_t *flags) {
    if (layer < 0 || layer >= net->n_layers) return DEN_EINVAL;
    const den_net_layer *L = &net->layers[layer];
    int64_t cols = den_layer_cols(L);
    for (int i = 0; i < L->n_out; i++) {
        int zero_in = L->b[i] == 0.0f;
        const float *w = L->W + (int64_t)i * cols;
        for (int64_t c = 0; c < cols && zero_in; c++) zero_in = w[c] == 0.0f;
        int any_out = 0;
        int n_readers = reads_layer_count(net, layer);
        for (int k = 0; k < n_readers && !any_out; k++) {
            const den_net_layer *R = layer + 1 < net->n_layers ? &net->layers[layer + 1] : &net->heads[k];
            for (int r = 0; r < R->n_out && !any_out; r++) any_out = reads_unit(R, r, i);
        }
        flags[i] = (uint8_t)(zero_in || !any_out);
    }
    return DEN_OK;
}
