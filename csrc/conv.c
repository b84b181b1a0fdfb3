/* conv.c: convolution through im2col + sgemm, max-pooling, and the naive reference (conv.h). */
#include "conv.h"

#include <string.h>

#include "den_blas.h"

void den_im2col(float *cols, const float *x, int C, int H, int W, int kh, int kw) {
    int ph = kh / 2, pw = kw / 2;
    int64_t HW = (int64_t)H * W;
    for (int c = 0; c < C; c++) {
        const float *xc = x + c * HW;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                float *row = cols + ((int64_t)(c * kh + i) * kw + j) * HW;
                int dy = i - ph, dx = j - pw;
                /* output pixel (y, x) reads input (y + dy, x + dx) */
                int x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? W - dx : W;
                for (int y = 0; y < H; y++) {
                    float *r = row + (int64_t)y * W;
                    int sy = y + dy;
                    if (sy < 0 || sy >= H || x1 <= x0) {
                        memset(r, 0, (size_t)W * sizeof(float));
                        continue;
                    }
                    if (x0 > 0) memset(r, 0, (size_t)x0 * sizeof(float));
                    memcpy(r + x0, xc + (int64_t)sy * W + x0 + dx, (size_t)(x1 - x0) * sizeof(float));
                    if (x1 < W) memset(r + x1, 0, (size_t)(W - x1) * sizeof(float));
                }
            }
        }
    }
}

void den_col2im_add(float *dx, const float *cols, int C, int H, int W, int kh, int kw) {
    int ph = kh / 2, pw = kw / 2;
    int64_t HW = (int64_t)H * W;
    for (int c = 0; c < C; c++) {
        float *dc = dx + c * HW;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                const float *row = cols + ((int64_t)(c * kh + i) * kw + j) * HW;
                int dy = i - ph, ddx = j - pw;
                int x0 = ddx < 0 ? -ddx : 0, x1 = ddx > 0 ? W - ddx : W;
                for (int y = 0; y < H; y++) {
                    int sy = y + dy;
                    if (sy < 0 || sy >= H) continue;
                    const float *r = row + (int64_t)y * W;
                    float *d = dc + (int64_t)sy * W + ddx;
                    for (int xx = x0; xx < x1; xx++) d[xx] += r[xx];
                }
            }
        }
    }
}

void den_conv_forward(float *out, float *cols, const float *x, const float *Wt, const float *b, int B, int C, int H,
                      int W, int F, int kh, int kw, int ldw, int relu) {
    int HW = H * W, K = C * kh * kw;
    for (int n = 0; n < B; n++) {
        float *o = out + (int64_t)n * F * HW;
        if (K > 0) {
            den_im2col(cols, x + (int64_t)n * C * HW, C, H, W, kh, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, HW, K, 1.0f, Wt, ldw, cols, HW, 0.0f, o, HW);
        } else {
            memset(o, 0, (size_t)F * HW * sizeof(float));
        }
        for (int f = 0; f < F; f++) {
            float *of = o + (int64_t)f * HW, bf = b[f];
            if (relu)
                for (int p = 0; p < HW; p++) {
                    float v = of[p] + bf;
                    of[p] = v > 0.0f ? v : 0.0f;
                }
            else
                for (int p = 0; p < HW; p++) of[p] += bf;
        }
    }
}

void den_conv_backward(float *dx, float *dW, float *db, float *cols, const float *dout, const float *x,
                       const float *Wt, int B, int C, int H, int W, int F, int kh, int kw, int ldw) {
    int HW = H * W, K = C * kh * kw;
    if (db) {
        memset(db, 0, (size_t)F * sizeof(float));
        for (int n = 0; n < B; n++)
            for (int f = 0; f < F; f++) {
                const float *d = dout + ((int64_t)n * F + f) * HW;
                float s = 0.0f;
                for (int p = 0; p < HW; p++) s += d[p];
                db[f] += s;
            }
    }
    if (dW && K > 0) {
        if (B == 0)
            for (int f = 0; f < F; f++) memset(dW + (int64_t)f * ldw, 0, (size_t)K * sizeof(float));
        for (int n = 0; n < B; n++) {
            den_im2col(cols, x + (int64_t)n * C * HW, C, H, W, kh, kw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, K, HW, 1.0f, dout + (int64_t)n * F * HW, HW, cols,
                        HW, n == 0 ? 0.0f : 1.0f, dW, ldw);
        }
    }
    if (dx) {
        memset(dx, 0, (size_t)B * C * HW * sizeof(float));
        if (K == 0 || F == 0) return;
        for (int n = 0; n < B; n++) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, HW, F, 1.0f, Wt, ldw, dout + (int64_t)n * F * HW, HW,
                        0.0f, cols, HW);
            den_col2im_add(dx + (int64_t)n * C * HW, cols, C, H, W, kh, kw);
        }
    }
}

void den_conv_fisher_accumulate(float *FW, float *Fb, float *tmp, float *cols, const float *dout, const float *x,
                                int B, int C, int H, int W, int F, int kh, int kw, int ldw) {
    int HW = H * W, K = C * kh * kw;
    for (int n = 0; n < B; n++) {
        const float *d = dout + (int64_t)n * F * HW;
        if (K > 0) {
            den_im2col(cols, x + (int64_t)n * C * HW, C, H, W, kh, kw);
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
