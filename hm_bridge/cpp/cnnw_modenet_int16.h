// cnnw_modenet_int16.h -- the int16 fixed-point kernels of the mode network (included by cnnw_modenet.h, which
// loads the file and runs the chain: cnnw::ModeNet::runInt). Dependency-free C++11.
//
// The integer rules are defined in hm_bridge/modenet.py (its numpy twin run_modenet_int gives the same logits
// bit for bit; tests/test_modenet_cpp.py holds the two equal): every activation int16 at a power-of-two scale
// q, weights int16 and biases int32, accumulation in int32 with two's-complement wrap-around (done here in
// uint32, where it is defined), shiftRound and sat16 (cnnw_format.h) to the next scale; the canvas
// normalisation with an integer square root and an integer log2, adaptive pooling with round-half-up division.
// Layout as the float path: channels-last (HWC) planes with a one-sample zero border, output channels padded
// to a multiple of 8 (zero weights and biases there). Portable loops over the output channels (g++ and clang
// vectorise them at -O3); no intrinsics.
#ifndef CNNW_MODENET_INT16_H
#define CNNW_MODENET_INT16_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cnnw_format.h"

namespace cnnw {
namespace modenet16 {

enum { kLogFrac = 16, kMaxChannels = 64 };

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
// input log2(deviation * 255) / 8 at kLogFrac + 3 fractional bits.
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
  const int k = (62 - bitLength(w)) & ~1, h = k / 2;
  const uint64_t r0 = isqrt((w << k) / (static_cast<uint64_t>(n) * n + static_cast<uint64_t>(count)));
  const uint64_t rmin = (static_cast<uint64_t>(2 * den * peak) << h) / 255;
  const int64_t r = static_cast<int64_t>(std::max(r0, rmin));
  const int64_t up = pow2(q + h);
  std::fill(o, o + 3 * plane, static_cast<int16_t>(0));
  for (int y = 1; y <= n; ++y)
    for (int x = 1; x <= n; ++x) o[y * side + x] = sat16(roundDiv((blk[y * side + x] * den - num) * up, r));
  for (int i = 0; i < plane; ++i)
    if (av[i]) {
      o[plane + i] = sat16(roundDiv((ref[i] * den - num) * up, r));
      o[2 * plane + i] = sat16(pow2(q));
    }
  return log2Fixed(static_cast<uint64_t>(r)) + log2Fixed(255) - (static_cast<int64_t>(h) << kLogFrac) -
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
  for (int i = 0; i < out; ++i) {
    const int y0 = i * side / out, y1 = ((i + 1) * side + out - 1) / out;
    for (int j = 0; j < out; ++j) {
      const int x0 = j * side / out, x1 = ((j + 1) * side + out - 1) / out;
      for (int c = 0; c < 3; ++c) {
        int64_t sum = 0;
        for (int y = y0; y < y1; ++y)
          for (int xx = x0; xx < x1; ++xx) sum += x[(c * side + y) * side + xx];
        a[((i + 1) * w + j + 1) * 3 + c] = static_cast<int16_t>(roundDiv(sum, (y1 - y0) * (x1 - x0)));
      }
    }
  }
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

// 3x3 convolution, padding 1, then ReLU: in (s+2)^2 x cin and out (s+2)^2 x coutPad, HWC, zero borders.
inline void conv3x3(const Conv &cv, const int16_t *in, int16_t *out, int s) {
  const int w = s + 2, cp = cv.coutPad;
  uint32_t acc[kMaxChannels];
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

// y = sat16(shiftRound(W x + b)) (and ReLU when relu) over outPad outputs; acc: outPad accumulators' room.
inline void dense(const Dense &d, const int16_t *x, int16_t *y, bool relu, uint32_t *acc) {
  for (int o = 0; o < d.outPad; ++o) acc[o] = static_cast<uint32_t>(d.b[o]);
  for (int i = 0; i < d.in; ++i) {
    const uint32_t xi = static_cast<uint32_t>(static_cast<int32_t>(x[i]));
    const int32_t *r = &d.wt[static_cast<size_t>(i) * d.outPad];
    for (int o = 0; o < d.outPad; ++o) acc[o] += xi * static_cast<uint32_t>(r[o]);
  }
  for (int o = 0; o < d.outPad; ++o) {
    const int16_t v = sat16(shiftRound(asInt32(acc[o]), d.shift));
    y[o] = relu ? std::max<int16_t>(v, 0) : v;
  }
}

}  // namespace modenet16
}  // namespace cnnw

#endif  // CNNW_MODENET_INT16_H
