// cnnw_conv.h -- the convolution layer of cnnw.h's graph (as SADL's layer_conv2d.h), in namespace
// cnnw::layers: conv2d (a node's output shape and margins, then one of the two paths), the portable loops
// (any groups, any kernel size, float and int16), and the vector path (groups == 1): the weights of a
// convolution packed once at load time into a ConvPlan (buildPlan), run by convRows with the kernels of
// cnnw_simd.h.
#ifndef CNNW_CONV_H
#define CNNW_CONV_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cnnw_buffer.h"
#include "cnnw_format.h"
#include "cnnw_simd.h"

namespace cnnw {
namespace layers {

// The portable convolution, float and int16 alike (any groups, any kernel size): for each output channel an
// accumulator plane, four input channels per pass. The input's zero margins are its padding, so the
// loops have no bounds. int16 accumulates in uint32 with wrap-around (defined, order-independent): the
// same bits as the vector kernels and as the Python twin.
inline float product(float w, float s) { return w * s; }
inline uint32_t product(int32_t w, int16_t s) { return static_cast<uint32_t>(w * static_cast<int32_t>(s)); }
inline float accInit(float b) { return b; }
inline uint32_t accInit(int32_t b) { return static_cast<uint32_t>(b); }
inline float finish(float a, int) { return a; }
inline int16_t finish(uint32_t a, int shift) {
  int32_t v;
  std::memcpy(&v, &a, 4);
  return sat16(shiftRound(v, shift));
}

template <typename T, typename Wt, typename Acc>
inline void convPortable(const Buf<T> &in, const Wt *w, const Wt *bias, int cout, int cin_g, int k, int pad, int groups,
                         int shift, Buf<T> &out) {
  const int G = Buf<T>::G, oh = out.h, ow = out.w, cout_g = cout / groups, kk = k * k;
  std::vector<Acc> acc(static_cast<size_t>(oh) * ow);
  for (int co = 0; co < cout; ++co) {
    std::fill(acc.begin(), acc.end(), accInit(bias[co]));
    const int c0 = (co / cout_g) * cin_g;
    const Wt *wco = w + static_cast<size_t>(co) * cin_g * kk;
    int ci = 0;
    for (; ci + 4 <= cin_g; ci += 4)
      for (int t = 0; t < kk; ++t) {
        const int dy = t / k - pad, dx = t % k - pad;
        const Wt w0 = wco[ci * kk + t], w1 = wco[(ci + 1) * kk + t], w2 = wco[(ci + 2) * kk + t],
                 w3 = wco[(ci + 3) * kk + t];
        for (int y = 0; y < oh; ++y) {
          const T *s0 = &in.v[in.at(c0 + ci, y + dy, dx)], *s1 = &in.v[in.at(c0 + ci + 1, y + dy, dx)];
          const T *s2 = &in.v[in.at(c0 + ci + 2, y + dy, dx)], *s3 = &in.v[in.at(c0 + ci + 3, y + dy, dx)];
          Acc *d = &acc[static_cast<size_t>(y) * ow];
          for (int x = 0; x < ow; ++x)
            d[x] += product(w0, s0[x * G]) + product(w1, s1[x * G]) + product(w2, s2[x * G]) + product(w3, s3[x * G]);
        }
      }
    for (; ci < cin_g; ++ci)
      for (int t = 0; t < kk; ++t) {
        const int dy = t / k - pad, dx = t % k - pad;
        const Wt wv = wco[ci * kk + t];
        for (int y = 0; y < oh; ++y) {
          const T *s = &in.v[in.at(c0 + ci, y + dy, dx)];
          Acc *d = &acc[static_cast<size_t>(y) * ow];
          for (int x = 0; x < ow; ++x) d[x] += product(wv, s[x * G]);
        }
      }
    for (int y = 0; y < oh; ++y) {
      T *o = &out.v[out.at(co, y, 0)];
      const Acc *a = &acc[static_cast<size_t>(y) * ow];
      for (int x = 0; x < ow; ++x) o[x * G] = finish(a[x], shift);
    }
  }
}

inline void portable(const Tensor &W, const Tensor &B, const Buffer &in, int cout, int cin_g, int k, int pad,
                     int groups, int shift, Buffer &out) {
  convPortable<float, float, float>(in, &W.data[0], &B.data[0], cout, cin_g, k, pad, groups, shift, out);
}
inline void portable(const Tensor &W, const Tensor &B, const IBuffer &in, int cout, int cin_g, int k, int pad,
                     int groups, int shift, IBuffer &out) {
  convPortable<int16_t, int32_t, uint32_t>(in, &W.idata[0], &B.idata[0], cout, cin_g, k, pad, groups, shift, out);
}

// The vector path's packed weights of one convolution: output channels in groups of at most CO (int16:
// whole pairs), each group's weights [input channel (int16: pair)][ky][kx][channel of the group], and
// the kernel of its size.
struct ConvGroup {
  int co0, count;
  size_t woff;
#ifdef CNNW_SIMD
  simd::KernelF kf;
  simd::KernelI ki;
#endif
};
struct ConvPlan {
  int k;
  std::vector<ConvGroup> groups;
  std::vector<float> wf, bf;
  std::vector<int32_t> wi, bi;
};

#ifdef CNNW_SIMD
// Packs the weights of one convolution the vector kernels take (groups == 1; Model::buildPlans calls it for
// each, once, at load time): precision kFloat32 or kInt16, that of the model.
inline ConvPlan buildPlan(const Tensor &W, const Tensor &B, uint32_t precision) {
  const int cout = static_cast<int>(W.dims[0]), cin = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
  const int kk = k * k;
  const bool fixed = precision == kInt16;
  ConvPlan pl;
  pl.k = k;
  // output channels (int16: pairs) in the fewest groups of at most CO, of near-equal sizes
  const int unit = fixed ? 2 : 1, units = (cout + unit - 1) / unit;
  const int most = (fixed ? static_cast<int>(simd::VecI::CO) : static_cast<int>(simd::VecF::CO)) / unit;
  const int ng = (units + most - 1) / most;
  int u0 = 0;
  size_t woff = 0;
  for (int g = 0; g < ng; ++g) {
    const int nu = units / ng + (g < units % ng ? 1 : 0);
    ConvGroup gr;
    gr.co0 = u0 * unit, gr.count = nu * unit, gr.woff = woff;
    gr.kf = k == 3 ? simd::kernelF<3>(gr.count) : (k == 1 ? simd::kernelF<1>(gr.count) : simd::kernelF<0>(gr.count));
    gr.ki = k == 3 ? simd::kernelI<3>(gr.count) : (k == 1 ? simd::kernelI<1>(gr.count) : simd::kernelI<0>(gr.count));
    pl.groups.push_back(gr);
    woff += static_cast<size_t>((cin + unit - 1) / unit) * kk * gr.count;
    u0 += nu;
  }
  const int coutp = units * unit;
  if (fixed) {
    pl.wi.assign(woff, 0);
    pl.bi.assign(coutp, 0);
    for (int co = 0; co < cout; ++co) pl.bi[co] = B.idata[co];
  } else {
    pl.wf.assign(woff, 0.f);
    pl.bf.assign(coutp, 0.f);
    for (int co = 0; co < cout; ++co) pl.bf[co] = B.data[co];
  }
  for (size_t g = 0; g < pl.groups.size(); ++g) {
    const ConvGroup &gr = pl.groups[g];
    for (int j = 0; j < gr.count && gr.co0 + j < cout; ++j)
      for (int c = 0; c < cin; ++c)
        for (int t = 0; t < kk; ++t) {
          const size_t src = (static_cast<size_t>(gr.co0 + j) * cin + c) * kk + t;
          const size_t dst = gr.woff + (static_cast<size_t>(c / unit) * kk + t) * gr.count + j;
          if (!fixed) {
            pl.wf[dst] = W.data[src];
          } else {  // (even channel, odd channel) as the low and high int16 of one int32
            const uint32_t v = static_cast<uint16_t>(static_cast<int16_t>(W.idata[src]));
            const uint32_t word = static_cast<uint32_t>(pl.wi[dst]) | (c % 2 ? v << 16 : v);
            std::memcpy(&pl.wi[dst], &word, 4);
          }
        }
  }
  return pl;
}

// The vector convolution: output rows in blocks of N x P pixels, every group of output channels on each
// block while its inputs are in cache. Reads past a row's end only reach lanes that are not stored.
inline void convRows(const ConvPlan &pl, const Buffer &in, int pad, int, Buffer &out) {
  const int block = simd::VecF::N * simd::VecF::P;
  const ptrdiff_t rs = in.rowStride();
  const size_t cs = in.planeSize(), os = out.planeSize();
  for (int y = 0; y < out.h; ++y)
    for (int x0 = 0; x0 < out.w; x0 += block) {
      const float *src = &in.v[in.at(0, y - pad, x0 - pad)];
      float *dst = &out.v[out.at(0, y, x0)];
      const int n = std::min(block, out.w - x0);
      for (size_t g = 0; g < pl.groups.size(); ++g) {
        const ConvGroup &gr = pl.groups[g];
        gr.kf(src, cs, rs, in.c, pl.k, &pl.wf[gr.woff], &pl.bf[gr.co0], dst + gr.co0 * os, os, n);
      }
    }
}
inline void convRows(const ConvPlan &pl, const IBuffer &in, int pad, int shift, IBuffer &out) {
  const int block = simd::VecI::N * simd::VecI::P;
  const ptrdiff_t rs = 2 * static_cast<ptrdiff_t>(in.rowStride());
  const size_t cs = 2 * in.planeSize(), os = 2 * out.planeSize();
  for (int y = 0; y < out.h; ++y)
    for (int x0 = 0; x0 < out.w; x0 += block) {
      const int16_t *src = &in.v[in.at(0, y - pad, x0 - pad)];
      int16_t *dst = &out.v[out.at(0, y, x0)];
      const int n = std::min(block, out.w - x0);
      for (size_t g = 0; g < pl.groups.size(); ++g) {
        const ConvGroup &gr = pl.groups[g];
        gr.ki(src, cs, rs, in.planes(), pl.k, &pl.wi[gr.woff], &pl.bi[gr.co0], shift, dst + (gr.co0 / 2) * os, os, n);
      }
    }
}
#endif

// A convolution node (weights W, biases B, zero padding pad, groups): the output's shape and margins (at
// scale q), then the vector path (plan: the weights packed at load, or null) or the portable loops.
// precision: the model's (int16: the rescaling shift of the sums).
template <typename T>
inline Status conv2d(const Tensor &W, const Tensor &B, int pad, int groups, const ConvPlan *plan, uint32_t precision,
                     int q, const Buf<T> &in, Buf<T> &out) {
  const int cout = static_cast<int>(W.dims[0]), cin_g = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
  const int oh = in.h + 2 * pad - k + 1, ow = in.w + 2 * pad - k + 1;
  if (oh <= 0 || ow <= 0) return Status::bad("convolution larger than the tile");
  if (pad > in.m) return Status::bad("convolution padding wider than the margins");
  out.reshape(cout, oh, ow, in.m);
  out.q = q;
  out.clearMargins();
  const int shift = precision == kInt16 ? W.frac + in.q - out.q : 0;
#ifdef CNNW_SIMD
  if (plan) {
    convRows(*plan, in, pad, shift, out);
    return Status::good();
  }
#else
  (void)plan;  // no vector path, no plans
#endif
  portable(W, B, in, cout, cin_g, k, pad, groups, shift, out);
  return Status::good();
}

}  // namespace layers
}  // namespace cnnw

#endif  // CNNW_CONV_H
