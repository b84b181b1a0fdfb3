/* loss.h: output heads fused with their losses.
 *
 * logits (B, k) -> prob (B, k), the summed loss over the batch (double), and, when dlogits is
 * not NULL, dlogits (B, k) = scale * d(summed loss)/d(logits). Training passes scale = 1/B so
 * that the gradient is that of the mean loss.
 */
#ifndef DEN_LOSS_H
#define DEN_LOSS_H

#include <stdint.h>

/* k independent sigmoids with binary cross-entropy; y (B, k) holds targets in [0, 1]. */
double den_sigmoid_bce(float *dlogits, float *prob, const float *logits, const float *y, int B,
                       int k, float scale);

/* k-way softmax with cross-entropy; y (B) holds class ids in [0, k). */
double den_softmax_ce(float *dlogits, float *prob, const float *logits, const int32_t *y, int B,
                      int k, float scale);

/* Probabilities only (prediction): prob may alias logits. */
void den_sigmoid(float *prob, const float *logits, int64_t n);
void den_softmax(float *prob, const float *logits, int B, int k);

#endif
