// Distributed differential privacy inside the ring: the client's encoding and the
// server's decoding for the distributed discrete Gaussian (Kairouz, Liu, Steinke,
// ICML 2021, "KLS") and the distributed Skellam mechanism (Agarwal, Kairouz, Liu,
// NeurIPS 2021, "AKL").
//
// Client (encode), for a vector x of length d, padded length D = 2^ceil(log2 d):
//   1. clip:    x <- x * w * min(1, c / ||x||_2)           (w in (0, 1] a public weight)
//   2. rotate:  y = H diag(s) x / sqrt(D)                  (s_i = +-1 from the rotation
//               key's keystream; H the D x D Walsh-Hadamard matrix; KLS sec. 4.2)
//   3. scale:   v = y / gamma
//   4. round:   r_i = floor(v_i) + (u_i < frac(v_i)), u_i from the rounding key; the whole
//               vector is redrawn (fresh coins, next attempt) until ||r||_2 <= norm_bound
//               and ||r - v||_2 <= error_bound: KLS's conditional randomized rounding.
//   5. noise:   r_i += Z_i, Z_i discrete Gaussian N_Z(0, sigma^2) or Skellam with
//               variance mu (Poisson(mu/2) - Poisson(mu/2)), from the noise key.
//   6. wrap:    out_i = r_i mod 2^b.
// Server (decode) of a ring sum S: centre S_i into [-2^(b-1), 2^(b-1)), multiply by
// gamma, undo the rotation, drop the padding.
//
// Randomness. Every coin is AES-128-CTR keystream (aes.hpp), so results are a
// deterministic function of the keys whatever the thread count:
//   rotation signs: key R, counter from 0; s_i = -1 where bit 63 of the little-endian
//               u64 word i of the stream is set (a word per sign: one XOR to apply);
//   rounding attempt a: key U, initial counter block (a, 0) (two big-endian u64), the
//               little-endian u64 word i for element i, u = [1 + (word >> 12) 2^-52] - 1
//               (a 52-bit uniform on [0, 1));
//   noise:      key N; coordinates are cut into chunks of 1024 and chunk j reads its
//               own stream from counter block (j, 0). The discrete Gaussian consumes it in
//               batches of 512 u64 words, candidate i of a batch taking words i and
//               256 + i; Skellam reads it one word at a time.
//
// Samplers (precision, stated honestly). The discrete Gaussian follows Canonne, Kamath
// and Steinke 2020, Algorithm 3 (rejection from a discrete Laplace of scale
// t = floor(sigma) + 1, accepted with probability exp(-(|Y| - sigma^2/t)^2 / 2 sigma^2)).
// CKS's algorithms are exact in rational arithmetic; this one is not: |Y| is drawn by
// inverting the geometric CDF, |Y| = floor(-t ln u) with u a 52-bit uniform in (0, 1],
// and the acceptance compares a 52-bit uniform with exp in binary64. ln and exp are
// branch-free polynomial evaluations (series to f^23 and r^13 after exact range
// reduction: truncation below 1e-18, a few ulps of rounding) so that the candidates are
// computed 4 or 8 at a time in SIMD registers. The result differs from the exact
// discrete Gaussian by those roundings: ~2^-50 in the acceptance test, and, u lying on a
// 2^-52 grid, a jitter of ~2^-52 t in |Y| (2^-22 of a step at sigma = 2^30, the
// calibration's cap; ~2e-4 at 2^38). |Y| is truncated at about 36 t, where the discrete
// Gaussian has mass below e^-600. Poisson draws
// use Hoermann's PTRS (transformed rejection with squeeze, 1993) for means >= 10 and
// multiplication of uniforms below, with libm's log in binary64; the log-acceptance
// -lambda + k ln lambda - ln k! cancels terms of size lambda ln lambda, so its error
// grows with lambda (measured: 8e-8 nats at 2^24, 4.4e-5 at 2^33, 1e-3 at 2^38, O(1) at
// 2^47). securefl.dp.calibrate keeps the Skellam std <= 2^17 (lambda <= 2^33) and the
// discrete Gaussian's sigma <= 2^30; the wider ranges check_noise accepts are not
// accurate.
//
// The code, one job per file: the samplers (dp_samplers.hpp), the rotation
// (dp_transform.hpp) and the pipeline that composes them (dp_pipeline.hpp). This header
// is the whole DP API and the one the bindings include.
#pragma once

#include "securefl/dp_pipeline.hpp"
#include "securefl/dp_samplers.hpp"
#include "securefl/dp_transform.hpp"
