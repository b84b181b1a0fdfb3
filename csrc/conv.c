/* conv.c: convolution through im2col + sgemm, max-pooling, and the naive reference (conv.h). */
#include "conv.h"

#include <string.h>

#include "den_blas.h"

int den_conv_samples_per_gemm(int B, int C, int H, int W, int kh, int kw) {
    int64_t per = (int64_t)C * kh * kw * H * W;
    int64_t nb = per > 0 ? DEN_CONV_COLS_FLOATS / per : B;
    if (nb < 1) nb = 1;
    return (int)(nb < B ? nb : (B > 0 ? B : 1));
}

/* One kernel tap (dy, dx) over one (H, W) plane: output pixel p = y * W + x reads input pixel
 * p + s, s = dy * W + dx, when (y + dy, x + dx) is inside the plane. The valid p lie in rows
 * [y0, y1) and, within the plane's flat index, in [lo, hi); inside that range only the |dx|
 * edge columns of each row are invalid. So one long copy (or add) over [lo, hi) plus a fix-up
 * of those columns replaces H short per-row pieces, which matters for the 8x8 and 16x16 maps
 * of the deeper layers. */
typedef struct {
    int64_t s, lo, hi;
    int y0, y1, empty;
} tap_range;

static tap_range tap_range_of(int H, int W, int dy, int dx) {
    tap_range t = {0};
    int64_t HW = (int64_t)H * W;
    t.s = (int64_t)dy * W + dx;
    t.y0 = dy < 0 ? -dy : 0;
    t.y1 = dy > 0 ? H - dy : H;
    t.empty = t.y1 <= t.y0 || dx >= W || -dx >= W;
    if (t.empty) return t;
    int64_t a = (int64_t)t.y0 * W, b = (int64_t)t.y1 * W;
    t.lo = a > -t.s ? a : -t.s;
    t.hi = b < HW - t.s ? b : HW - t.s;
    if (t.hi < t.lo) t.hi = t.lo;
    return t;
}

/* Zero the columns of rows [y0, y1) whose source x + dx falls outside the plane. */
static void zero_edge_columns(float *r, const tap_range *t, int W, int dx) {
    int c0 = dx < 0 ? 0 : W - dx, c1 = dx < 0 ? -dx : W;
    if (dx == 0) return;
    for (int y = t->y0; y < t->y1; y++)
        for (int x = c0; x < c1; x++) r[(int64_t)y * W + x] = 0.0f;
}

void den_im2col(float *cols, int64_t ld, const float *x, int C, int H, int W, int kh, int kw) {
    int ph = kh / 2, pw = kw / 2;
    int64_t HW = (int64_t)H * W;
    for (int c = 0; c < C; c++) {
        const float *xc = x + c * HW;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *r = cols + ((int64_t)(c * kh + i) * kw + j) * ld;
                int dy = i - ph, dx = j - pw;
                tap_range t = tap_range_of(H, W, dy, dx);
                if (t.empty) {
                    memset(r, 0, (size_t)HW * sizeof(float));
                    continue;
                }
                if (t.lo > 0) memset(r, 0, (size_t)t.lo * sizeof(float));
                memcpy(r + t.lo, xc + t.lo + t.s, (size_t)(t.hi - t.lo) * sizeof(float));
                if (t.hi < HW) memset(r + t.hi, 0, (size_t)(HW - t.hi) * sizeof(float));
                zero_edge_columns(r, &t, W, dx);
            }
        }
    }
}

static void add_shifted(float *restrict d, const float *restrict r, int64_t n) {
    for (int64_t p = 0; p < n; p++) d[p] += r[p];
}

void den_col2im_add(float *dx, float *cols, int64_t ld, int C, int H, int W, int kh, int kw) {
    int ph = kh / 2, pw = kw / 2;
    int64_t HW = (int64_t)H * W;
    for (int c = 0; c < C; c++) {
        float *dc = dx + c * HW;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *r = cols + ((int64_t)(c * kh + i) * kw + j) * ld;
                int dy = i - ph, ddx = j - pw;
                tap_range t = tap_range_of(H, W, dy, ddx);
                if (t.empty) continue;
                zero_edge_columns(r, &t, W, ddx); /* padding positions must add nothing */
                add_shifted(dc + t.lo + t.s, r + t.lo, t.hi - t.lo);
            }
        }
    }
}

void den_conv_forward(float *out, float *cols, float *tmp, const float *x, const float *Wt, const float *b, int B,
                      int C, int H, int W, int F, int kh, int kw, int ldw, int relu) {
    int64_t HW = (int64_t)H * W;
    int K = C * kh * kw, nb = den_conv_samples_per_gemm(B, C, H, W, kh, kw);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        int64_t N = m * HW;
        if (K > 0) {
            for (int i = 0; i < m; i++) den_im2col(cols + i * HW, N, x + (int64_t)(n0 + i) * C * HW, C, H, W, kh, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, (int)N, K, 1.0f, Wt, ldw, cols, (int)N, 0.0f, tmp,
                        (int)N);
        } else {
            memset(tmp, 0, (size_t)F * N * sizeof(float));
        }
        /* (F, m*HW) -> (m, F, HW), with bias and ReLU */
        for (int i = 0; i < m; i++)
            for (int f = 0; f < F; f++) {
                const float *src = tmp + f * N + i * HW;
                float *o = out + ((int64_t)(n0 + i) * F + f) * HW, bf = b[f];
                if (relu)
                    for (int64_t p = 0; p < HW; p++) {
                        float v = src[p] + bf;
                        o[p] = v > 0.0f ? v : 0.0f;
                    }
                else
                    for (int64_t p = 0; p < HW; p++) o[p] = src[p] + bf;
            }
    }
}

void den_conv_backward(float *dx, float *dW, float *db, float *cols, float *tmp, const float *dout, const float *x,
                       const float *Wt, int B, int C, int H, int W, int F, int kh, int kw, int ldw) {
    int64_t HW = (int64_t)H * W;
    int K = C * kh * kw, nb = den_conv_samples_per_gemm(B, C, H, W, kh, kw);
    if (db) {
        memset(db, 0, (size_t)F * sizeof(float));
        for (int n = 0; n < B; n++)
            for (int f = 0; f < F; f++) {
                const float *d = dout + ((int64_t)n * F + f) * HW;
                float s = 0.0f;
                for (int64_t p = 0; p < HW; p++) s += d[p];
                db[f] += s;
            }
    }
    if (dW && (K == 0 || B == 0))
        for (int f = 0; f < F; f++) memset(dW + (int64_t)f * ldw, 0, (size_t)K * sizeof(float));
    if (dx) memset(dx, 0, (size_t)B * C * HW * sizeof(float));
    if (K == 0 || F == 0 || (!dW && !dx)) return;
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        int64_t N = m * HW;
        /* dout of the m samples as (F, m*HW) */
        for (int i = 0; i < m; i++)
            for (int f = 0; f < F; f++)
                memcpy(tmp + f * N + i * HW, dout + ((int64_t)(n0 + i) * F + f) * HW, (size_t)HW * sizeof(float));
        if (dW) {
            for (int i = 0; i < m; i++) den_im2col(cols + i * HW, N, x + (int64_t)(n0 + i) * C * HW, C, H, W, kh, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, K, (int)N, 1.0f, tmp, (int)N, cols, (int)N,
                        n0 == 0 ? 0.0f : 1.0f, dW, ldw);
        }
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, (int)N, F, 1.0f, Wt, ldw, tmp, (int)N, 0.0f, cols,
                        (int)N);
            for (int i = 0; i < m; i++) den_col2im_add(dx + (int64_t)(n0 + i) * C * HW, cols + i * HW, N, C, H, W, kh, kw);
        }
    }
}

void den_conv_fisher_accumulate(float *FW, float *Fb, float *tmp, float *cols, const float *dout, const float *x,
                                int B, int C, int H, int W, int F, int kh, int kw, int ldw) {
    int HW = H * W, K = C * kh * kw;
    for (int n = 0; n < B; n++) {
        const float *d = dout + (int64_t)n * F * HW;
        if (K > 0) {
            den_im2col(cols, HW, x + (int64_t)n * C * HW, C, H, W, kh, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, K, HW, 1.0f, d, HW, cols, HW, 0.0f, tmp, K);
            for (int f = 0; f < F; f++) {
                float *row = FW + (int64_t)f * ldw;
                const float *t = tmp + (int64_t)f * K;
                for (int k = 0; k < K; k++) row[k] += t[k] * t[k];
            }
        }
        for (int f = 0; f < F; f++) {
            float s = 0.0f;
            for (int p = 0; p < HW; p++) s += d[(int64_t)f * HW + p];
            Fb[f] += s * s;
        }
    }
}

void den_conv_forward_naive(float *out, const float *x, const float *Wt, const float *b, int B, int C, int H, int W,
                            int F, int kh, int kw, int ldw) {
    int ph = kh / 2, pw = kw / 2;
    for (int n = 0; n < B; n++)
        for (int f = 0; f < F; f++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    double s = b[f];
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int sy = y + i - ph, sx = xx + j - pw;
                                if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                                s += (double)Wt[(int64_t)f * ldw + (c * kh + i) * kw + j] *
                                     x[(((int64_t)n * C + c) * H + sy) * W + sx];
                            }
                    out[(((int64_t)n * F + f) * H + y) * W + xx] = (float)s;
                }
}

void den_maxpool_forward(float *out, int32_t *arg, const float *x, int B, int C, int H, int W, int p) {
    int Ho = H / p, Wo = W / p;
    for (int64_t plane = 0; plane < (int64_t)B * C; plane++) {
        const float *xp = x + plane * H * W;
        float *op = out + plane * Ho * Wo;
        int32_t *ap = arg + plane * Ho * Wo;
        for (int y = 0; y < Ho; y++)
            for (int xx = 0; xx < Wo; xx++) {
                int best = (y * p) * W + xx * p;
                for (int i = 0; i < p; i++)
                    for (int j = 0; j < p; j++) {
                        int idx = (y * p + i) * W + xx * p + j;
                        if (xp[idx] > xp[best]) best = idx;
                    }
                op[y * Wo + xx] = xp[best];
                ap[y * Wo + xx] = best;
            }
    }
}

void den_maxpool_backward(float *dx, const float *dout, const int32_t *arg, int B, int C, int H, int W, int p) {
    int Ho = H / p, Wo = W / p;
    memset(dx, 0, (size_t)B * C * H * W * sizeof(float));
    for (int64_t plane = 0; plane < (int64_t)B * C; plane++) {
        float *dp = dx + plane * H * W;
        const float *op = dout + plane * Ho * Wo;
        const int32_t *ap = arg + plane * Ho * Wo;
        for (int q = 0; q < Ho * Wo; q++) dp[ap[q]] += op[q];
    }
}
