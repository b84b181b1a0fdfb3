/* dense.h: fully connected layer and ReLU kernels (float32, row-major, OpenBLAS sgemm).
 *
 * Shapes: a batch is (B, n_in); a weight matrix is (n_out, n_in) with row stride ldw >= n_in
 * (a layer may be used through a prefix of its rows and columns: the timestamp rule);
 * bias is (n_out). Masked weights are kept at exactly 0 by the optimizer, so the forward pass
 * needs no mask: a zero weight contributes nothing.
 *
 * Backward kernels WRITE their gradients (they do not accumulate): in every training step each
 * parameter has exactly one contributor, and writing saves a zeroing pass per step.
 */
#ifndef DEN_DENSE_H
#define DEN_DENSE_H

#include <stdint.h>

/* out (B, n_out) = inp (B, n_in) @ W[:n_out, :n_in]^T + b, then ReLU if relu != 0. */
void den_dense_forward(float *out, const float *inp, const float *W, const float *b,
                       int B, int n_in, int n_out, int ldw, int relu);

/* Given dout (B, n_out), the gradient w.r.t. the layer's pre-activation:
 *   dW[:n_out, :n_in] (row stride ldw) = dout^T @ inp      (skipped if dW is NULL)
 *   db (n_out)                         = column sums of dout (skipped if db is NULL)
 *   dinp (B, n_in)                     = dout @ W[:n_out, :n_in] (skipped if dinp is NULL) */
void den_dense_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                        const float *W, int B, int n_in, int n_out, int ldw);

/* Diagonal Fisher accumulation from per-sample gradients of a dense layer: the per-sample
 * gradient of W is dout_i inp_i^T, so the sum over the batch of its squares is
 * (dout o dout)^T (inp o inp). Given the squares dout_sq (B, n_out) and inp_sq (B, n_in):
 *   FW[:n_out, :n_in] (row stride ldw) += dout_sq^T @ inp_sq;   Fb += column sums of dout_sq. */
void den_dense_fisher_accumulate(float *FW, float *Fb, const float *dout_sq, const float *inp_sq,
                                 int B, int n_in, int n_out, int ldw);

/* ReLU backward in place, from the layer's OUTPUT: d[i] = 0 where out[i] <= 0. */
void den_relu_backward(float *d, const float *out, int64_t n);

#endif
