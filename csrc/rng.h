/* rng.h: a small deterministic random number generator (xoshiro256**, seeded by splitmix64).
 *
 * Every random choice in the core (weight initialisation, minibatch shuffling) draws from a
 * den_rng seeded from the caller's seed, so results depend only on the seed and the thread
 * count, never on global state.
 */
#ifndef DEN_RNG_H
#define DEN_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } den_rng;

void den_rng_seed(den_rng *r, uint64_t seed);
uint64_t den_rng_next(den_rng *r);
/* Uniform double in [0, 1). */
double den_rng_uniform(den_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t den_rng_below(den_rng *r, uint64_t n);
/* Standard normal (Box-Muller; one value per call, simplicity over speed: init only). */
double den_rng_normal(den_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void den_rng_shuffle(den_rng *r, int64_t *idx, int64_t n);

#endif
