/* conv.h: 2-D convolution (stride 1, "same" zero padding, odd square or rectangular kernels),
 * ReLU and max-pooling kernels, lowered onto OpenBLAS sgemm through im2col.
 *
 * Layout: images are (C, H, W) row-major, a batch is (B, C, H, W). A filter bank is the
 * matrix Wt (F, C * kh * kw) with row stride ldw: filter f's weights for input channel c are the
 * kh*kw entries starting at column c * kh * kw, so a prefix of the columns is a prefix of the
 * input channels (the timestamp rule), exactly like a dense layer whose input units own
 * kh*kw columns each.
 *
 * Forward and backward lower nb samples at a time onto one GEMM with N = nb * H * W columns:
 * cols (C*kh*kw, nb*H*W) = im2col of the nb samples side by side, then
 * tmp (F, nb*H*W) = Wt @ cols, scattered into the (B, F, H, W) output. Working memory of one
 * call: cols, C*kh*kw*nb*H*W floats, and tmp, F*nb*H*W floats, with nb =
 * den_conv_samples_per_gemm(B, C, H, W, kh, kw): as many samples as keep cols within
 * DEN_CONV_COLS_FLOATS (1 Mi floats, 4 MiB), at least 1. Nothing is allocated per call.
 * Why that small: the GEMM reads cols right after im2col wrote it (forward) or writes it right
 * before col2im reads it (backward), so cols should still be in cache. At 8 Mi floats both ran
 * at memory speed and training was 20-35% slower (benchmarks/README.md, CNN throughput; the
 * budget can be set at build time with CFLAGS=-DDEN_CONV_COLS_FLOATS=...).
 *
 * A naive seven-loop convolution stays here as the reference the GEMM version is tested
 * against (den._core exposes both to the tests).
 */
#ifndef DEN_CONV_H
#define DEN_CONV_H

#include <stdint.h>

#ifndef DEN_CONV_COLS_FLOATS
#define DEN_CONV_COLS_FLOATS (1 << 20)
#endif

/* Samples per GEMM for a batch of B (see above). */
int den_conv_samples_per_gemm(int B, int C, int H, int W, int kh, int kw);

/* cols (C*kh*kw rows, row stride ld >= H*W) from x (C, H, W) with zero padding kh/2, kw/2:
 * row (c, i, j) holds the input pixel each output pixel sees through kernel tap (i, j). */
void den_im2col(float *cols, int64_t ld, const float *x, int C, int H, int W, int kh, int kw);
/* dx (C, H, W) += the columns' contributions (the adjoint of im2col). cols is scratch: its
 * entries at padding positions are zeroed. */
void den_col2im_add(float *dx, float *cols, int64_t ld, int C, int H, int W, int kh, int kw);

/* out (B, F, H, W) = conv(x, Wt) + b, then ReLU if relu != 0. cols: C*kh*kw*nb*H*W floats,
 * tmp: F*nb*H*W floats, nb = den_conv_samples_per_gemm(B, ...). */
void den_conv_forward(float *out, float *cols, float *tmp, const float *x, const float *Wt, const float *b, int B,
                      int C, int H, int W, int F, int kh, int kw, int ldw, int relu);

/* Given dout (B, F, H, W), the gradient w.r.t. the pre-activation:
 *   dW[:F, :C*kh*kw] (row stride ldw) = sum_i dout_i @ cols_i^T   (skipped if dW is NULL)
 *   db (F) = sums of dout over batch and pixels                   (skipped if db is NULL)
 *   dx (B, C, H, W) = the input gradient                          (skipped if dx is NULL)
 * dW, db and dx are written, not accumulated. cols and tmp as for den_conv_forward. */
void den_conv_backward(float *dx, float *dW, float *db, float *cols, float *tmp, const float *dout, const float *x,
                       const float *Wt, int B, int C, int H, int W, int F, int kh, int kw, int ldw);

/* Diagonal Fisher accumulation for a conv layer. Weight sharing makes a sample's gradient a sum
 * over pixels, so its square is not a sum of squares: per sample, tmp (F, C*kh*kw) =
 * dout_i @ cols_i^T, then FW += tmp^2 and Fb += (pixel sum of dout_i)^2. tmp: F*C*kh*kw
 * floats; cols: C*kh*kw*H*W floats (one sample). */
void den_conv_fisher_accumulate(float *FW, float *Fb, float *tmp, float *cols, const float *dout, const float *x,
                                int B, int C, int H, int W, int F, int kh, int kw, int ldw);

/* Reference: the same forward as seven plain loops (no ReLU). */
void den_conv_forward_naive(float *out, const float *x, const float *Wt, const float *b, int B, int C, int H, int W,
                            int F, int kh, int kw, int ldw);

/* Max pooling with a p x p window and stride p (trailing rows/columns that do not fill a window
 * are dropped): out (B, C, H/p, W/p), arg the flat index (within the (H, W) plane) of each max. */
void den_maxpool_forward(float *out, int32_t *arg, const float *x, int B, int C, int H, int W, int p);
/* dx (B, C, H, W) = dout routed back to the max positions (dx is overwritten). */
void den_maxpool_backward(float *dx, const float *dout, const int32_t *arg, int B, int C, int H, int W, int p);

#endif
