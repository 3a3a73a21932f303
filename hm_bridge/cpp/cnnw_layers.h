// cnnw_layers.h -- the layers of cnnw.h's graph that move samples or add them (as SADL's layer_concat.h,
// layer_add.h ...): the QP plane, concat, ReLU, add and crop, float and int16 buffers alike, in namespace
// cnnw::layers. The convolution is in cnnw_conv.h; Model::runGraph (cnnw_model.h) checks the inputs and sets
// the scales.
#ifndef CNNW_LAYERS_H
#define CNNW_LAYERS_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cnnw_buffer.h"
#include "cnnw_format.h"

namespace cnnw {
namespace layers {

// Concat and crop move samples only: one implementation for float and int16 buffers (runGraph checks
// and sets the scales).
template <typename T>
inline Status concatInto(const std::vector<Buf<T>> &vals, const Node &n, Buf<T> &out) {
  int c = 0;
  bool whole = true;  // every input but the last fills whole channel groups: the planes are copied as they are
  const Buf<T> &a0 = vals[n.inputs[0]];
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Buf<T> &a = vals[n.inputs[k]];
    if (a.h != a0.h || a.w != a0.w || a.m != a0.m) return Status::bad("concat of different sizes");
    if (k + 1 < n.inputs.size() && a.c % Buf<T>::G) whole = false;
    c += a.c;
  }
  out.reshape(c, a0.h, a0.w, a0.m);
  if (whole) {
    size_t off = 0;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Buf<T> &a = vals[n.inputs[k]];
      std::copy(a.v.begin(), a.v.begin() + a.storage(), out.v.begin() + off);
      off += a.storage();
    }
    std::fill(out.v.begin() + off, out.v.end(), T());
    return Status::good();
  }
  std::fill(out.v.begin(), out.v.end(), T());  // int16 channels of odd counts: one channel at a time
  int ch = 0;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Buf<T> &a = vals[n.inputs[k]];
    for (int j = 0; j < a.c; ++j, ++ch)
      for (int y = 0; y < a.h; ++y)
        for (int x = 0; x < a.w; ++x) out.v[out.at(ch, y, x)] = a.v[a.at(j, y, x)];
  }
  return Status::good();
}

template <typename T>
inline Status cropInto(const Buf<T> &a, int k, Buf<T> &out) {
  if (k < 0 || a.h <= 2 * k || a.w <= 2 * k) return Status::bad("crop larger than the tile");
  out.reshape(a.c, a.h - 2 * k, a.w - 2 * k, a.m);
  out.clearMargins();
  for (int p = 0; p < a.planes(); ++p)
    for (int y = 0; y < out.h; ++y) {
      const T *s = &a.v[a.at(p * Buf<T>::G, y + k, k)];
      std::copy(s, s + static_cast<size_t>(out.w) * Buf<T>::G, &out.v[out.at(p * Buf<T>::G, y, 0)]);
    }
  return Status::good();
}

// ReLU in place, on the whole storage (margins stay zero).
template <typename T>
inline void relu(Buf<T> &out) {
  for (size_t k = 0; k < out.v.size(); ++k) out.v[k] = out.v[k] > T(0) ? out.v[k] : T(0);
}

// The per-type steps of runGraph, as overloads: the QP plane, add (out holds the first input, at scale
// aq) and the convolution (conv2d, cnnw_conv.h). Add works on the whole storage: margins stay zero.
template <typename T>
inline void fillInside(Buf<T> &out, T value) {
  out.clearMargins();
  for (int ch = 0; ch < out.c; ++ch)
    for (int y = 0; y < out.h; ++y)
      for (int x = 0; x < out.w; ++x) out.v[out.at(ch, y, x)] = value;
}
inline void fillQp(Buffer &out, int qp) { fillInside(out, static_cast<float>(qp) / 51.0f); }
inline void fillQp(IBuffer &out, int qp) {
  fillInside(out, sat16((static_cast<int64_t>(qp) * (static_cast<int64_t>(1) << out.q) + 25) / 51));
}
inline void addInto(Buffer &out, int, const Buffer &b) {
  for (size_t k = 0; k < out.v.size(); ++k) out.v[k] += b.v[k];
}
inline void addInto(IBuffer &out, int aq, const IBuffer &b) {
  for (size_t k = 0; k < out.v.size(); ++k)
    out.v[k] = sat16(shiftRound(out.v[k], aq - out.q) + shiftRound(b.v[k], b.q - out.q));
}

}  // namespace layers
}  // namespace cnnw

#endif  // CNNW_LAYERS_H
