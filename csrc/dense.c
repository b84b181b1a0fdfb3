/* dense.c: dense layer kernels on top of cblas_sgemm. */
#include "dense.h"

#include <string.h>

#include "den_blas.h"

void den_dense_forward(float *out, const float *inp, const float *W, const float *b,
                       int B, int n_in, int n_out, int ldw, int relu) {
    if (B == 0 || n_out == 0) return;
    if (n_in > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, 1.0f, inp, n_in, W,
                    ldw, 0.0f, out, n_out);
    } else {
        memset(out, 0, (size_t)B * (size_t)n_out * sizeof(float));
    }
    /* Bias and ReLU in one pass over the output. */
    for (int i = 0; i < B; i++) {
        float *o = out + (int64_t)i * n_out;
        if (relu) {
            for (int j = 0; j < n_out; j++) {
                float v = o[j] + b[j];
                o[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < n_out; j++) o[j] += b[j];
        }
    }
}

void den_dense_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp,
                        const float *W, int B, int n_in, int n_out, int ldw) {
    if (n_out <= 0) {
        if (dinp && B > 0 && n_in > 0) memset(dinp, 0, (size_t)B * (size_t)n_in * sizeof(float));
        return;
    }
    if (dW && n_in > 0) {
        if (B > 0) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, 1.0f, dout, n_out,
                        inp, n_in, 0.0f, dW, ldw);
        } else {
            for (int r = 0; r < n_out; r++) memset(dW + (int64_t)r * ldw, 0, (size_t)n_in * sizeof(float));
        }
    }
    if (db) {
        memset(db, 0, (size_t)n_out * sizeof(float));
        for (int i = 0; i < B; i++) {
            const float *d = dout + (int64_t)i * n_out;
            for (int j = 0; j < n_out; j++) db[j] += d[j];
        }
    }
    if (dinp && n_in > 0) {
        if (B > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0f, dout, n_out,
                        W, ldw, 0.0f, dinp, n_in);
    }
}

void den_dense_fisher_accumulate(float *FW, float *Fb, const float *dout_sq, const float *inp_sq,
                                 int B, int n_in, int n_out, int ldw) {
    if (B == 0 || n_out == 0) return;
    if (n_in > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, 1.0f, dout_sq, n_out,
                    inp_sq, n_in, 1.0f, FW, ldw);
    for (int i = 0; i < B; i++) {
        const float *d = dout_sq + (int64_t)i * n_out;
        for (int j = 0; j < n_out; j++) Fb[j] += d[j];
    }
}

void den_relu_backward(float *d, const float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = out[i] > 0.0f ? d[i] : 0.0f;
}
