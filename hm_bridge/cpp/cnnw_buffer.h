// cnnw_buffer.h -- the node buffers of cnnw.h's graph runner (as SADL's tensor.h): Buf<T>, a C x H x W
// buffer of float or int16 samples with zero margins around every plane, and the pool that recycles their
// storage from tile to tile.
#ifndef CNNW_BUFFER_H
#define CNNW_BUFFER_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cnnw {

// Spare positions after the last plane of a buffer: the vector loads of a row's last block of pixels
// may run past the end of the row (into lanes that are computed but never stored).
static const int kSlack = 128;

// A C x H x W buffer of samples T, as SADL's Tensor<T>: float (float32 models) or int16_t (int16 models,
// where q is the power-of-two scale of the samples: value = sample / 2^q; float buffers keep q = 0).
// Every plane has a zero margin of m samples on each side (the convolutions' zero padding, read in place).
// int16 channels are stored in interleaved pairs (G = 2: sample (c, y, x) of an even and an odd channel
// side by side; an odd count ends with a zero channel); float channels one plane each (G = 1).
template <typename T>
struct Buf {
  enum { G = sizeof(T) == 2 ? 2 : 1 };
  int c, h, w, q, m;
  std::vector<T> v;
  Buf() : c(0), h(0), w(0), q(0), m(0) {}
  int rowStride() const { return w + 2 * m; }                                         // positions
  size_t planeSize() const { return static_cast<size_t>(h + 2 * m) * rowStride(); }   // positions
  int planes() const { return (c + G - 1) / G; }                                      // channel groups
  size_t storage() const { return static_cast<size_t>(planes()) * planeSize() * G; }  // samples
  // The index of sample (ch, y, x); y and x may lie in the margin (-m .. h + m - 1).
  size_t at(int ch, int y, int x) const {
    return ((ch / G) * planeSize() + static_cast<size_t>(y + m) * rowStride() + (x + m)) * G + ch % G;
  }
  // New dimensions on the storage it holds (a recycled vector): contents unspecified; every op either
  // writes all of it or calls clearMargins() and writes the inside.
  void reshape(int c_, int h_, int w_, int m_) {
    c = c_, h = h_, w = w_, m = m_;
    v.resize(storage() + static_cast<size_t>(kSlack) * G);
  }
  // Zeroes the margins of every plane, the padding channel of an odd int16 count, and the slack.
  void clearMargins() {
    const size_t ps = planeSize() * G, rs = static_cast<size_t>(rowStride()) * G, mg = static_cast<size_t>(m) * G;
    for (int p = 0; p < planes(); ++p) {
      T *b = &v[p * ps];
      std::fill(b, b + mg * rowStride(), T());
      std::fill(b + (h + m) * rs, b + ps, T());
      for (int y = 0; y < h; ++y) {
        T *r = b + (y + m) * rs;
        std::fill(r, r + mg, T());
        std::fill(r + mg + static_cast<size_t>(w) * G, r + rs, T());
      }
    }
    if (G == 2 && c % 2) {
      T *b = &v[(planes() - 1) * ps];
      for (size_t i = 1; i < ps; i += 2) b[i] = T();
    }
    std::fill(v.begin() + storage(), v.end(), T());
  }
};
typedef Buf<float> Buffer;     // float32 models
typedef Buf<int16_t> IBuffer;  // int16 models

// The pool of a tile's node buffers (kept by the caller across tiles: no allocation, no zero fill and no
// page faults after the first tile). A node buffer takes its storage from the pool when it has one.
template <typename T>
inline void recycle(Buf<T> &b, std::vector<std::vector<T>> &pool) {
  if (pool.empty()) return;
  b.v.swap(pool.back());
  pool.pop_back();
}

// A buffer no later node reads gives its storage back.
template <typename T>
inline void toPool(Buf<T> &b, std::vector<std::vector<T>> &pool) {
  if (b.v.capacity() == 0) return;
  pool.push_back(std::vector<T>());
  pool.back().swap(b.v);
}

// Every buffer of a finished tile goes back to the pool.
template <typename T>
inline void release(std::vector<Buf<T>> &vals, std::vector<std::vector<T>> &pool) {
  for (size_t i = 0; i < vals.size(); ++i) toPool(vals[i], pool);
}

}  // namespace cnnw

#endif  // CNNW_BUFFER_H
