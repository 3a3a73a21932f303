// cnnw_modenet_int16.h -- the int16 fixed-point kernels of the mode network (included by cnnw_modenet.h, which
// loads the file and runs the chain: cnnw::ModeNet::runInt). Dependency-free C++11.
//
// The integer rules are defined in hm_bridge/modenet.py (its numpy twin run_modenet_int gives the same logits
// bit for bit; tests/test_modenet_cpp.py holds the two equal): every activation int16 at a power-of-two scale
// q, weights int16 and biases int32, accumulation in int32 with two's-complement wrap-around (done here in
// uint32, where it is defined), shiftRound and sat16 (cnnw_format.h) to the next scale; the canvas
// normalisation with an integer square root and an integer log2, adaptive pooling with round-half-up division.
// Layout as the float path: channels-last (HWC) planes with a one-sample zero border, output channels padded
// to a multiple of 8 (zero weights and biases there). AVX2 kernels for the convolutions and dense layers (8
// output channels of int32 per vector, vpmulld and vpaddd, which wrap as the rules do) where the compiler
// targets AVX2, portable loops otherwise (-DCNNW_NO_SIMD forces them): the same bits either way.
#ifndef CNNW_MODENET_INT16_H
#define CNNW_MODENET_INT16_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cnnw_format.h"

#if !defined(CNNW_NO_SIMD) && defined(__AVX2__)
#include <immintrin.h>
#define CNNW_MODENET16_AVX2 1
#endif

namespace cnnw {
namespace modenet16 {

enum { kLogFrac = 16, kMaxChannels = 64 };
enum { kDevScale = (1 << 8) - 1 };  // the float model's DEVIATION_SCALE, an 8-bit peak (modenet.DEV_SCALE)

// floor(a / b) for b > 0 (Python's //).
inline int64_t floorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
// Round half up: (2a + b) // (2b), b > 0.
inline int64_t roundDiv(int64_t a, int64_t b) { return floorDiv(2 * a + b, 2 * b); }

inline int bitLength(uint64_t v) {
  int b = 0;
  while (v) ++b, v >>= 1;
  return b;
}

// floor(sqrt(v)) (Python's math.isqrt), digit by digit.
inline uint64_t isqrt(uint64_t v) {
  uint64_t r = 0, bit = static_cast<uint64_t>(1) << 62;
  while (bit > v) bit >>= 2;
  while (bit) {
    if (v >= r + bit) {
      v -= r + bit;
      r = (r >> 1) + bit;
    } else {
      r >>= 1;
    }
    bit >>= 2;
  }
  return r;
}

// log2(x) * 2^16 for x >= 1: the bit length, then 16 fractional bits by squaring a 31-bit mantissa
// (modenet.log2_fixed).
inline int64_t log2Fixed(uint64_t x) {
  const int e = bitLength(x) - 1;
  uint64_t m = e <= 30 ? x << (30 - e) : x >> (e - 30);
  int64_t out = static_cast<int64_t>(e) << kLogFrac;
  for (int bit = kLogFrac - 1; bit >= 0; --bit) {
    m = (m * m) >> 30;
    if (m >= (static_cast<uint64_t>(1) << 31)) {
      m >>= 1;
      out |= static_cast<int64_t>(1) << bit;
    }
  }
  return out;
}

inline int64_t pow2(int s) { return static_cast<int64_t>(1) << s; }

// int32 with wrap-around, kept in a uint32 (defined overflow), read back as int32.
inline int32_t asInt32(uint32_t a) {
  int32_t v;
  std::memcpy(&v, &a, 4);
  return v;
}

// The canvas of integer samples (3 planes of (2n+1)^2: block, references, availability) at scale q, CHW into o:
// without normalisation (the RDN's input rule). Returns 0 (no deviation side input).
inline void scaleCanvas(const int32_t *c, int n, int peak, int q, int16_t *o) {
  const int plane = (2 * n + 1) * (2 * n + 1);
  for (int i = 0; i < 2 * plane; ++i) o[i] = sat16(floorDiv(static_cast<int64_t>(c[i]) * pow2(q) + peak / 2, peak));
  for (int i = 0; i < plane; ++i) o[2 * plane + i] = sat16(c[2 * plane + i] != 0 ? pow2(q) : 0);
}

// NORMALISE in integers (modenet.normalise_int): the canvas at scale q into o (CHW); returns the deviation side
// input log2(deviation * kDevScale) / 8 at kLogFrac + 3 fractional bits.
inline int64_t normaliseCanvas(const int32_t *c, int n, int peak, int q, int16_t *o) {
  const int side = 2 * n + 1, plane = side * side;
  const int32_t *blk = c, *ref = c + plane, *av = c + 2 * plane;
  int64_t count = 0, sum = 0;
  for (int i = 0; i < plane; ++i)
    if (av[i]) ++count, sum += ref[i];
  const int64_t num = count ? sum : peak, den = count ? count : 2;
  uint64_t w = 0;
  for (int y = 1; y <= n; ++y)
    for (int x = 1; x <= n; ++x) {
      const int64_t d = blk[y * side + x] * den - num;
      w += static_cast<uint64_t>(d * d);
    }
  for (int i = 0; i < plane; ++i)
    if (av[i]) {
      const int64_t d = ref[i] * den - num;
      w += static_cast<uint64_t>(d * d);
    }
  const int k = (62 - bitLength(w)) & ~1;
  int h = k / 2;
  const uint64_t r0 = isqrt((w << k) / (static_cast<uint64_t>(n) * n + static_cast<uint64_t>(count)));
  const uint64_t rmin = (static_cast<uint64_t>(2 * den * peak) << h) / kDevScale;
  uint64_t r = std::max(r0, rmin);
  const int g = std::max(0, bitLength(r) - 32);  // (clamped deviations only) at most 32 bits: r and h lowered
  r >>= g, h -= g;
  // value = D 2^h / r at scale q: D 2^h (< 2^31) times the reciprocal R = 2^(e+30) // r (30 bits), then rescaled
  const int e = bitLength(r), shift = e + 30 - q;
  const int64_t recip = static_cast<int64_t>((static_cast<uint64_t>(1) << (e + 30)) / r), up = pow2(h);
  std::fill(o, o + 3 * plane, static_cast<int16_t>(0));
  for (int y = 1; y <= n; ++y)
    for (int x = 1; x <= n; ++x)
      o[y * side + x] = sat16(shiftRound((blk[y * side + x] * den - num) * up * recip, shift));
  for (int i = 0; i < plane; ++i)
    if (av[i]) {
      o[plane + i] = sat16(shiftRound((ref[i] * den - num) * up * recip, shift));
      o[2 * plane + i] = sat16(pow2(q));
    }
  return log2Fixed(static_cast<uint64_t>(r)) + log2Fixed(kDevScale) - (static_cast<int64_t>(h) << kLogFrac) -
         log2Fixed(static_cast<uint64_t>(den)) - log2Fixed(static_cast<uint64_t>(peak));
}

// The side inputs at scale q (modenet.side_ints): log2(n) / 5, qp / 51 and, with normalisation, the deviation's.
inline int sideInts(int n, int qp, bool withDev, int64_t dev, int q, int16_t *out) {
  const int64_t l = n == 4 ? 2 : n == 8 ? 3 : n == 16 ? 4 : 5;
  out[0] = sat16(floorDiv(l * pow2(q + 1) + 5, 10));
  out[1] = sat16(floorDiv(static_cast<int64_t>(qp) * pow2(q + 1) + 51, 102));
  if (!withDev) return 2;
  out[2] = sat16(shiftRound(dev, kLogFrac + 3 - q));
  return 3;
}

// The CHW canvas (side^2 per channel) into the zero-bordered HWC input of the first convolution (3 channels,
// (out+2)^2 pixels), average-pooled (adaptive, round half up) when out < side.
inline void poolCanvas(const int16_t *x, int side, int out, int16_t *a) {
  const int w = out + 2;
  if (out == side) {
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < side; ++y)
        for (int xx = 0; xx < side; ++xx) a[((y + 1) * w + xx + 1) * 3 + c] = x[(c * side + y) * side + xx];
    return;
  }
  for (int i = 0; i < out; ++i) {
    const int y0 = i * side / out, y1 = ((i + 1) * side + out - 1) / out;
    for (int j = 0; j < out; ++j) {
      const int x0 = j * side / out, x1 = ((j + 1) * side + out - 1) / out;
      for (int c = 0; c < 3; ++c) {
        int32_t sum = 0;  // at most 64 samples: fits, and 32-bit division is the faster
        for (int y = y0; y < y1; ++y)
          for (int xx = x0; xx < x1; ++xx) sum += x[(c * side + y) * side + xx];
        const int32_t area = (y1 - y0) * (x1 - x0), num = 2 * sum + area, quo = num / (2 * area);
        a[((i + 1) * w + j + 1) * 3 + c] = static_cast<int16_t>(num % (2 * area) < 0 ? quo - 1 : quo);
      }
    }
  }
}

// cell[c] = max(cell[c], px[c]) for c < cp (a multiple of 8).
inline void maxInto(int16_t *cell, const int16_t *px, int cp) {
#ifdef CNNW_MODENET16_AVX2
  for (int c = 0; c < cp; c += 8) {
    __m128i *dst = reinterpret_cast<__m128i *>(cell + c);
    _mm_storeu_si128(dst,
                     _mm_max_epi16(_mm_loadu_si128(dst), _mm_loadu_si128(reinterpret_cast<const __m128i *>(px + c))));
  }
#else
  for (int c = 0; c < cp; ++c) cell[c] = std::max(cell[c], px[c]);
#endif
}

struct Conv {
  int cin, cout, coutPad, shift;  // shift: q_w + q_in - q_out
  std::vector<int32_t> w, b;      // w: [ky][kx][ci][coutPad] (int16 values widened); b: [coutPad]
};

struct Dense {
  int in, out, outPad, shift;
  Dense() : in(0), out(0), outPad(0), shift(0) {}
  std::vector<int32_t> wt, b;  // wt: [in][outPad] (transposed, zero columns past out), b: [outPad]
};

// 3x3 convolution, padding 1, then ReLU: in (s+2)^2 x cin and out (s+2)^2 x coutPad, HWC, zero borders. CP: the
// padded output channels when known at compile time (the accumulators then stay in vector registers), else 0.
template <int CP>
inline void conv3x3Fixed(const Conv &cv, const int16_t *in, int16_t *out, int s) {
  const int w = s + 2, cp = CP ? CP : cv.coutPad;
  uint32_t acc[CP ? CP : kMaxChannels];
  for (int y = 0; y < s; ++y)
    for (int x = 0; x < s; ++x) {
      for (int co = 0; co < cp; ++co) acc[co] = static_cast<uint32_t>(cv.b[co]);
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
          const int16_t *ip = in + (static_cast<size_t>(y + ky) * w + x + kx) * cv.cin;
          const int32_t *wp = &cv.w[static_cast<size_t>(ky * 3 + kx) * cv.cin * cp];
          for (int ci = 0; ci < cv.cin; ++ci, wp += cp) {
            const uint32_t v = static_cast<uint32_t>(static_cast<int32_t>(ip[ci]));
            for (int co = 0; co < cp; ++co) acc[co] += v * static_cast<uint32_t>(wp[co]);
          }
        }
      int16_t *op = out + (static_cast<size_t>(y + 1) * w + x + 1) * cp;
      for (int co = 0; co < cp; ++co) op[co] = std::max<int16_t>(sat16(shiftRound(asInt32(acc[co]), cv.shift)), 0);
    }
}

#ifdef CNNW_MODENET16_AVX2
// P output pixels of one row x CV vectors of 8 channels, int32 accumulators in registers; ReLU at the end.
template <int CV, int P>
inline void convPixels(const Conv &cv, const int16_t *in, int16_t *out, int w, int y, int x) {
  __m256i acc[P][CV];
  for (int v = 0; v < CV; ++v) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(&cv.b[8 * v]));
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  const int cin = cv.cin, cp = cv.coutPad;
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx) {
      const int16_t *ip = in + (static_cast<size_t>(y + ky) * w + x + kx) * cin;
      const int32_t *wp = &cv.w[static_cast<size_t>(ky * 3 + kx) * cin * cp];
      for (int ci = 0; ci < cin; ++ci, wp += cp) {
        __m256i wv[CV];
        for (int v = 0; v < CV; ++v) wv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(wp + 8 * v));
        for (int p = 0; p < P; ++p) {
          const __m256i a = _mm256_set1_epi32(ip[p * cin + ci]);
          for (int v = 0; v < CV; ++v) acc[p][v] = _mm256_add_epi32(acc[p][v], _mm256_mullo_epi32(a, wv[v]));
        }
      }
    }
  int32_t lanes[8];
  for (int p = 0; p < P; ++p) {
    int16_t *op = out + (static_cast<size_t>(y + 1) * w + x + p + 1) * cp;
    for (int v = 0; v < CV; ++v) {
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(lanes), acc[p][v]);
      for (int l = 0; l < 8; ++l) op[8 * v + l] = std::max<int16_t>(sat16(shiftRound(lanes[l], cv.shift)), 0);
    }
  }
}

template <int CV>
inline void convRows(const Conv &cv, const int16_t *in, int16_t *out, int s) {
  enum { P = CV <= 2 ? 4 : 2 };
  const int w = s + 2;
  for (int y = 0; y < s; ++y) {
    int x = 0;
    for (; x + P <= s; x += P) convPixels<CV, P>(cv, in, out, w, y, x);
    for (; x < s; ++x) convPixels<CV, 1>(cv, in, out, w, y, x);
  }
}
#endif

inline void conv3x3(const Conv &cv, const int16_t *in, int16_t *out, int s) {
#ifdef CNNW_MODENET16_AVX2
  switch (cv.coutPad / 8) {
    case 1:
      return convRows<1>(cv, in, out, s);
    case 2:
      return convRows<2>(cv, in, out, s);
    case 3:
      return convRows<3>(cv, in, out, s);
    case 4:
      return convRows<4>(cv, in, out, s);
    default:
      break;
  }
#endif
  switch (cv.coutPad) {
    case 8:
      return conv3x3Fixed<8>(cv, in, out, s);
    case 16:
      return conv3x3Fixed<16>(cv, in, out, s);
    case 24:
      return conv3x3Fixed<24>(cv, in, out, s);
    case 32:
      return conv3x3Fixed<32>(cv, in, out, s);
    default:
      return conv3x3Fixed<0>(cv, in, out, s);
  }
}

// y = sat16(shiftRound(W x + b)) (and ReLU when relu) over outPad outputs; acc: outPad accumulators' room.
inline void dense(const Dense &d, const int16_t *x, int16_t *y, bool relu, uint32_t *acc) {
#ifdef CNNW_MODENET16_AVX2
  for (int o0 = 0; o0 < d.outPad; o0 += 32) {  // up to 4 vectors of 8 outputs at a time, in registers
    const int nv = std::min(4, (d.outPad - o0) / 8);
    __m256i a[4];
    for (int v = 0; v < nv; ++v) a[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(&d.b[o0 + 8 * v]));
    const int32_t *r = &d.wt[o0];
    for (int i = 0; i < d.in; ++i, r += d.outPad) {
      const __m256i xi = _mm256_set1_epi32(x[i]);
      for (int v = 0; v < nv; ++v)
        a[v] = _mm256_add_epi32(
            a[v], _mm256_mullo_epi32(xi, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(r + 8 * v))));
    }
    for (int v = 0; v < nv; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i *>(acc + o0 + 8 * v), a[v]);
  }
#else
  for (int o = 0; o < d.outPad; ++o) acc[o] = static_cast<uint32_t>(d.b[o]);
  for (int i = 0; i < d.in; ++i) {
    const uint32_t xi = static_cast<uint32_t>(static_cast<int32_t>(x[i]));
    const int32_t *r = &d.wt[static_cast<size_t>(i) * d.outPad];
    for (int o = 0; o < d.outPad; ++o) acc[o] += xi * static_cast<uint32_t>(r[o]);
  }
#endif
  for (int o = 0; o < d.outPad; ++o) {
    const int16_t v = sat16(shiftRound(asInt32(acc[o]), d.shift));
    y[o] = relu ? std::max<int16_t>(v, 0) : v;
  }
}

}  // namespace modenet16
}  // namespace cnnw

#endif  // CNNW_MODENET_INT16_H
