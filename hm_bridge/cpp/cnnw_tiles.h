// cnnw_tiles.h -- a luma plane cut into tiles for cnnw.h's Model::filterPlane (cnnw_model.h), in namespace
// cnnw::tiles: the job of one filterPlane call (its CTUs shared out among the threads) and the tile fill
// (a CTU with its context, edge-replicated outside the picture).
#ifndef CNNW_TILES_H
#define CNNW_TILES_H

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "cnnw_format.h"
#include "cnnw_profile.h"

namespace cnnw {
namespace tiles {

// One filterPlane call: the plane, its CTUs (taken in turn by the threads through ``next``), the output,
// the first error and the profile (if asked for; each thread adds its own to it at the end).
template <typename Pel>
struct Job {
  const Pel *src;
  ptrdiff_t stride;
  int width, height, bitDepth, qp, ctu, cols, count;
  Pel *out;
  float *floatOut;
  std::vector<NodeTime> *profile;
  std::atomic<int> next;
  std::atomic<bool> failed;
  std::mutex lock;
  Status status;
  Job(const Pel *s, ptrdiff_t st, int w, int h, int bd, int q, int c, Pel *o, float *fo)
      : src(s),
        stride(st),
        width(w),
        height(h),
        bitDepth(bd),
        qp(q),
        ctu(c),
        cols((w + c - 1) / c),
        count(cols * ((h + c - 1) / c)),
        out(o),
        floatOut(fo),
        profile(nullptr),
        next(0),
        failed(false),
        status(Status::good()) {}
};

// Sample conversions for fillTile: a float in [0, 1] (float models), the integer sample (int16 models).
struct SampleToFloat {
  float peak;
  explicit SampleToFloat(float p) : peak(p) {}
  template <typename Pel>
  float operator()(Pel sample) const {
    return static_cast<float>(sample) / peak;
  }
};
struct SampleToInt {
  template <typename Pel>
  int32_t operator()(Pel sample) const {
    return static_cast<int32_t>(sample);
  }
};

// The one tile fill of both paths: the CTU at (x0, y0) with its context border (context samples wide),
// side x side samples, edge-replicated outside the picture (as codecnn.data.ctu.tile_plane and codecnn's
// datasets).
template <typename Pel, typename T, typename Convert>
inline void fillTile(const Pel *src, ptrdiff_t stride, int width, int height, int context, int x0, int y0, int side,
                     T *tile, Convert convert) {
  for (int y = 0; y < side; ++y) {
    const Pel *row = src + std::min(std::max(y0 + y - context, 0), height - 1) * stride;
    T *t = tile + static_cast<size_t>(y) * side;
    for (int x = 0; x < side; ++x) t[x] = convert(row[std::min(std::max(x0 + x - context, 0), width - 1)]);
  }
}

}  // namespace tiles
}  // namespace cnnw

#endif  // CNNW_TILES_H
