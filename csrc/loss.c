/* loss.c: numerically stable sigmoid/softmax losses. */
#include "loss.h"

#include <math.h>

static inline float sigmoidf(float z) {
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

double den_sigmoid_bce(float *dlogits, float *prob, const float *logits, const float *y, int B,
                       int k, float scale) {
    double total = 0.0;
    int64_t n = (int64_t)B * k;
    for (int64_t i = 0; i < n; i++) {
        float z = logits[i], t = y[i];
        float p = sigmoidf(z);
        /* log(1 + e^z) - t z, written so that neither branch overflows */
        total += (double)((z > 0.0f ? z : 0.0f) - z * t + log1pf(expf(-fabsf(z))));
        prob[i] = p;
        if (dlogits) dlogits[i] = scale * (p - t);
    }
    return total;
}

double den_softmax_ce(float *dlogits, float *prob, const float *logits, const int32_t *y, int B,
                      int k, float scale) {
    double total = 0.0;
    for (int i = 0; i < B; i++) {
        const float *z = logits + (int64_t)i * k;
        float *p = prob + (int64_t)i * k;
        float m = z[0];
        for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
        double s = 0.0;
        for (int j = 0; j < k; j++) {
            p[j] = expf(z[j] - m);
            s += p[j];
        }
        float inv = (float)(1.0 / s);
        for (int j = 0; j < k; j++) p[j] *= inv;
        total += log(s) + (double)m - (double)z[y[i]];
        if (dlogits) {
            float *d = dlogits + (int64_t)i * k;
            for (int j = 0; j < k; j++) d[j] = scale * p[j];
            d[y[i]] -= scale;
        }
    }
    return total;
}

void den_sigmoid(float *prob, const float *logits, int64_t n) {
    for (int64_t i = 0; i < n; i++) prob[i] = sigmoidf(logits[i]);
}

void den_softmax(float *prob, const float *logits, int B, int k) {
    for (int i = 0; i < B; i++) {
        const float *z = logits + (int64_t)i * k;
        float *p = prob + (int64_t)i * k;
        float m = z[0];
        for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
        double s = 0.0;
        for (int j = 0; j < k; j++) {
            p[j] = expf(z[j] - m);
            s += p[j];
        }
        float inv = (float)(1.0 / s);
        for (int j = 0; j < k; j++) p[j] *= inv;
    }
}
