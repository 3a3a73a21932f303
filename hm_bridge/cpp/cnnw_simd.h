// cnnw_simd.h -- the vector kernels of cnnw.h's convolutions (cnnw_conv.h runs them): the choice of
// instruction set (CNNW_AVX512, CNNW_AVX2, CNNW_SIMD) and, where there is one, namespace cnnw::simd.
#ifndef CNNW_SIMD_H
#define CNNW_SIMD_H

#include <cstddef>
#include <cstdint>

#include "cnnw_format.h"

// Vector kernels for x86: AVX-512 (F, BW; VNNI used when present) or AVX2 with FMA, chosen by the
// compiler flags (-march=native, or -mavx2 -mfma); every other target, or CNNW_NO_SIMD defined, uses the
// portable loops. All give the same int16 output (integer accumulation wraps modulo 2^32, so its order
// does not matter); the float paths differ by rounding only.
#if !defined(CNNW_NO_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__FMA__)
#define CNNW_AVX512 1
#define CNNW_SIMD 1
#include <immintrin.h>
#elif !defined(CNNW_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define CNNW_AVX2 1
#define CNNW_SIMD 1
#include <immintrin.h>
#endif

namespace cnnw {

#ifdef CNNW_SIMD
// The vector kernels. S (VecF, VecI below) gives the instruction set: N pixels per vector, P vectors of
// pixels per block, CO the most output channels per block (CO x P accumulators stay in registers).
namespace simd {
#ifdef CNNW_AVX512
struct VecF {
  typedef __m512 V;
  typedef float T;  // a sample
  typedef float W;  // a weight or bias
  enum { N = 16, P = 4, CO = 6, E = 1 };
  static V load(const float *p) { return _mm512_loadu_ps(p); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mac(V acc, V x, V w) { return fma(w, x, acc); }
  static void store(float *p, V v, int n) {  // the first n lanes (n >= 1)
    if (n >= N)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
};
struct VecI {  // 32-bit lanes: a pixel's pair of int16 channels in, its int32 sum out
  typedef __m512i V;
  typedef int16_t T;
  typedef int32_t W;  // a pair of int16 weights, or a bias
  enum { N = 16, P = 4, CO = 6, E = 2 };
  static V load(const int16_t *p) { return _mm512_loadu_si512(p); }
  static V set1(int32_t v) { return _mm512_set1_epi32(v); }
  static V dot(V acc, V a, V b) {  // acc + a.lo b.lo + a.hi b.hi, every sum modulo 2^32
#ifdef __AVX512VNNI__
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
  }
  static V mac(V acc, V x, V w) { return dot(acc, x, w); }
  // (the zero-masked forms: GCC 12's plain ones trip -Wmaybe-uninitialized on their undefined operand)
  static V sra(V v, int s) { return _mm512_maskz_sra_epi32(0xFFFF, v, _mm_cvtsi32_si128(s)); }
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V band(V a, V b) { return _mm512_and_si512(a, b); }
  static V bor(V a, V b) { return _mm512_or_si512(a, b); }
  static V shl16(V v) { return _mm512_maskz_slli_epi32(0xFFFF, v, 16); }
  static V clamp(V v, V lo, V hi) { return _mm512_maskz_min_epi32(0xFFFF, _mm512_maskz_max_epi32(0xFFFF, v, lo), hi); }
  static void store(int16_t *p, V v, int n) {  // the first n lanes (pairs of int16)
    if (n >= N)
      _mm512_storeu_si512(p, v);
    else
      _mm512_mask_storeu_epi32(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static void storeAll(int32_t *p, V v) { _mm512_storeu_si512(p, v); }
};
#else
inline __m256i firstLanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
struct VecF {
  typedef __m256 V;
  typedef float T;
  typedef float W;
  enum { N = 8, P = 2, CO = 6, E = 1 };
  static V load(const float *p) { return _mm256_loadu_ps(p); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mac(V acc, V x, V w) { return fma(w, x, acc); }
  static void store(float *p, V v, int n) {
    if (n >= N)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, firstLanes(n), v);
  }
};
struct VecI {
  typedef __m256i V;
  typedef int16_t T;
  typedef int32_t W;
  enum { N = 8, P = 2, CO = 4, E = 2 };
  static V load(const int16_t *p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
  static V set1(int32_t v) { return _mm256_set1_epi32(v); }
  static V dot(V acc, V a, V b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static V mac(V acc, V x, V w) { return dot(acc, x, w); }
  static V sra(V v, int s) { return _mm256_sra_epi32(v, _mm_cvtsi32_si128(s)); }
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V band(V a, V b) { return _mm256_and_si256(a, b); }
  static V bor(V a, V b) { return _mm256_or_si256(a, b); }
  static V shl16(V v) { return _mm256_slli_epi32(v, 16); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_epi32(_mm256_max_epi32(v, lo), hi); }
  static void store(int16_t *p, V v, int n) {
    if (n >= N)
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v);
    else
      _mm256_maskstore_epi32(reinterpret_cast<int *>(p), firstLanes(n), v);
  }
  static void storeAll(int32_t *p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v); }
};
#endif

// The loop that follows unrolled completely (GCC >= 8 and clang read "GCC unroll"), so that every index
// into the block's accumulator array is a constant: only then do compilers keep the array in registers.
#if (defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 8)
#define CNNW_UNROLL _Pragma("GCC unroll 16")
#else
#define CNNW_UNROLL
#endif

// The sums of one block: CO output channels x P vectors of pixels of one output row, each the bias plus the
// products over all input groups and taps, in registers. A group is one channel (VecF) or an interleaved
// pair of int16 channels (VecI: E = 2 samples per pixel, one dot takes both). src: group 0 at the block's
// first tap (margins hold the zero padding); groups cstride apart, rows rs apart, in samples. w:
// [group][ky][kx][CO]. The sums build up in a local array that only constant indices reach (the loops over
// j unrolled by CNNW_UNROLL, those over p short enough to be unrolled anyway) and go to acc at the end, where
// the epilogues index it with loop variables. Summed in acc itself, they stayed in memory, loaded and stored
// around every tap (g++ 12 and clang 22): scripts/bench_bridge.py measured the int16 3x3 convolutions of
// zoo:rdn-inloop-ai-v2 at 0.75 of one core's int16 MAC peak then, 0.95 now (g++ 12, AVX-512 VNNI).
template <class S, int K, int CO>
inline void accumulate(typename S::V (&acc)[CO][S::P], const typename S::T *src, size_t cstride, ptrdiff_t rs,
                       int groups, int kr, const typename S::W *w, const typename S::W *b) {
  const int k = K ? K : kr;
  typename S::V sum[CO][S::P];
  CNNW_UNROLL
  for (int j = 0; j < CO; ++j) {
    const typename S::V bv = S::set1(b[j]);
    for (int p = 0; p < S::P; ++p) sum[j][p] = bv;
  }
  for (int c = 0; c < groups; ++c, src += cstride)
    for (int ky = 0; ky < k; ++ky)
      for (int kx = 0; kx < k; ++kx, w += CO) {
        const typename S::T *s = src + ky * rs + S::E * kx;
        typename S::V x[S::P];
        for (int p = 0; p < S::P; ++p) x[p] = S::load(s + p * S::E * S::N);
        for (int j = 0; j < CO; ++j) {
          const typename S::V wv = S::set1(w[j]);
          for (int p = 0; p < S::P; ++p) sum[j][p] = S::mac(sum[j][p], x[p], wv);
        }
      }
  CNNW_UNROLL
  for (int j = 0; j < CO; ++j)
    for (int p = 0; p < S::P; ++p) acc[j][p] = sum[j][p];
}

// One block of a float convolution (see accumulate). dst: output channel j at dst + j * ostride; n of the
// block's pixels are stored (the rest lie past the row's end).
template <int K, int CO>
void convBlockF(const float *src, size_t cstride, ptrdiff_t rs, int cin, int kr, const float *w, const float *b,
                float *dst, size_t ostride, int n) {
  typedef VecF S;
  S::V acc[CO][S::P];
  accumulate<S, K, CO>(acc, src, cstride, rs, cin, kr, w, b);
  for (int j = 0; j < CO; ++j)
    for (int p = 0; p < S::P && p * S::N < n; ++p) S::store(dst + j * ostride + p * S::N, acc[j][p], n - p * S::N);
}

// One block of an int16 convolution (see accumulate): the dots (vpdpwssd, or _mm256_madd_epi16 and an add)
// take the input channels in interleaved pairs, the weights as (w_even, w_odd) int16 pairs. CO is even:
// output channels j and j + 1 are rescaled (round-half-up shift, exact in 32 bits for 1 <= shift <= 31),
// saturated to int16 and stored as one interleaved pair. Offsets in int16 samples.
template <int K, int CO>
void convBlockI(const int16_t *src, size_t cstride, ptrdiff_t rs, int pairs, int kr, const int32_t *w, const int32_t *b,
                int shift, int16_t *dst, size_t ostride, int n) {
  typedef VecI S;
  S::V acc[CO][S::P];
  accumulate<S, K, CO>(acc, src, cstride, rs, pairs, kr, w, b);
  const S::V lo = S::set1(-32768), hi = S::set1(32767), low16 = S::set1(0xFFFF), one = S::set1(1);
  for (int j = 0; j < CO; j += 2)
    for (int p = 0; p < S::P && p * S::N < n; ++p) {
      S::V a = acc[j][p], c = acc[j + 1][p];
      if (shift >= 1 && shift <= 31) {  // (v + 2^(s-1)) >> s == (v >> s) + bit s-1 of v
        a = S::add(S::sra(a, shift), S::band(S::sra(a, shift - 1), one));
        c = S::add(S::sra(c, shift), S::band(S::sra(c, shift - 1), one));
      } else {  // the scalar rule (int64) for other shifts
        int32_t ta[S::N], tc[S::N];
        S::storeAll(ta, a), S::storeAll(tc, c);
        for (int i = 0; i < S::N; ++i) {
          ta[i] = sat16(shiftRound(ta[i], shift));
          tc[i] = sat16(shiftRound(tc[i], shift));
        }
        a = S::load(reinterpret_cast<const int16_t *>(ta)), c = S::load(reinterpret_cast<const int16_t *>(tc));
      }
      a = S::clamp(a, lo, hi), c = S::clamp(c, lo, hi);
      S::store(dst + (j / 2) * ostride + p * 2 * S::N, S::bor(S::band(a, low16), S::shl16(c)), n - p * S::N);
    }
}

typedef void (*KernelF)(const float *, size_t, ptrdiff_t, int, int, const float *, const float *, float *, size_t, int);
typedef void (*KernelI)(const int16_t *, size_t, ptrdiff_t, int, int, const int32_t *, const int32_t *, int, int16_t *,
                        size_t, int);

template <int K>
KernelF kernelF(int co) {
  switch (co) {
    case 1:
      return &convBlockF<K, 1>;
    case 2:
      return &convBlockF<K, 2>;
    case 3:
      return &convBlockF<K, 3>;
    case 4:
      return &convBlockF<K, 4>;
    case 5:
      return &convBlockF<K, 5>;
    default:
      return &convBlockF<K, 6>;
  }
}

template <int K>
KernelI kernelI(int co) {
  switch (co) {
    case 2:
      return &convBlockI<K, 2>;
    case 4:
      return &convBlockI<K, 4>;
    default:
      return &convBlockI<K, VecI::CO>;
  }
}
}  // namespace simd
#endif

}  // namespace cnnw

#endif  // CNNW_SIMD_H
