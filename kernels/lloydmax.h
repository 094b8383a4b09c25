/* lloydmax.h — Lloyd-Max scalar quantizer codebooks, computed by tqpipe itself (no tables copied in).
 *
 * Two laws:
 *   TQ_LAW_GAUSS  N(0, 1)                               (the large-d limit; scale by 1/sqrt(d) for a
 *                                                        coordinate of a unit vector)
 *   TQ_LAW_BETA   one coordinate of a uniformly random unit vector in dimension d:
 *                 density ∝ (1 - x²)^((d-3)/2) on [-1, 1]  (d >= 2; d == 1 is the two-point law ±1)
 * A codebook has 2^b centroids (ascending, symmetric about 0) and 2^b - 1 boundaries at the midpoints.
 * Computed by Lloyd iterations (centroid condition, then midpoint boundaries) in double with exact
 * cell masses (erfc for the Gaussian; the regularized incomplete beta function for the Beta law, whose
 * first moment is closed form), until the centroids move less than 1e-14.
 * Results are cached per (law, d, b) behind a mutex: compute once, then free lookups from any thread. */
#ifndef TQ_LLOYDMAX_H
#define TQ_LLOYDMAX_H

#include "status.h"

typedef enum { TQ_LAW_GAUSS = 0, TQ_LAW_BETA = 1 } tq_law;

#define TQ_LM_MAX_BITS 8

/* Centroids (2^bits doubles, ascending) and the MSE E[(x - Q(x))²] of the law (for TQ_LAW_BETA this is
 * the per-coordinate MSE; multiply by d for the normalized MSE of a unit vector). d is ignored for
 * TQ_LAW_GAUSS. bits in 1..TQ_LM_MAX_BITS, d >= 1. Thread-safe; cached.
 * @return TQ_OK, TQ_ERR_ARG (bits or d out of range), TQ_ERR_NUMERIC (no convergence). */
tq_status tq_lloydmax(tq_law law, int d, int bits, double* centroids, double* mse);

/* Same, as float centroids scaled for a coordinate of a unit vector in dimension d: the Beta law is
 * returned as is, the Gaussian codebook is multiplied by 1/sqrt(d). */
tq_status tq_lloydmax_unit_f32(tq_law law, int d, int bits, float* centroids);

/* MSE of an arbitrary codebook (nearest-centroid rule, midpoint boundaries) under the Beta(d) law, per
 * coordinate: lets one compare the Gaussian-derived codebook with the exact Beta one. */
double tq_lloydmax_beta_mse_of(int d, int bits, const double* centroids);

#endif
