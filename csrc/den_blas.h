/* den_blas.h: the one place that includes OpenBLAS's cblas.h.
 *
 * den uses a single thread pool: OpenBLAS's. The core's own loops (activations, losses,
 * optimizer steps) are single-threaded and memory-bound; threading them too would put a
 * second pool on the same cores. den_blas_set_threads is the one knob.
 */
#ifndef DEN_BLAS_H
#define DEN_BLAS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* cblas.h declares openblas_setaffinity with cpu_set_t */
#endif
#include <sched.h>
#include <cblas.h>

static inline void den_blas_set_threads(int n) { openblas_set_num_threads(n); }
static inline int den_blas_get_threads(void) { return openblas_get_num_threads(); }
static inline const char *den_blas_corename(void) { return openblas_get_corename(); }
static inline const char *den_blas_config(void) { return openblas_get_config(); }

#endif
