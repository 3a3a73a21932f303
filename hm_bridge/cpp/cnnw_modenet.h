// cnnw_modenet.h -- dependency-free C++11 inference of codecnn's intra-mode network (ModeNet) exported as a
// version 3 .cnnw file (hm_bridge/modenet.py writes it; the chain of ops is specified there):
//   canvas (3 x (2N+1)^2) -> [normalise] -> [average pooling to pool_to] -> (3x3 conv, ReLU) x depth
//   -> spatial pyramid max pooling -> dense + side inputs -> ReLU -> per-size head (or dense) + side -> 35 logits
// A float32 model's output equals PyTorch's up to rounding; an int16 model's (codecnn export --int16; its
// kernels in cnnw_modenet_int16.h) equals the numpy twin hm_bridge.modenet.run_modenet_int bit for bit
// (tests/test_modenet_cpp.py).
//
// Use (HM's intra search does it through codecnn_modes_hm.h):
//   cnnw::ModeNet net;
//   cnnw::Status st = net.load("modes.cnnw");           // not ok: st.message names the file and says why
//   cnnw::ModeNet::Scratch scratch;                     // one per thread; reused, no allocation per block
//   float logits[35];                                   // a float32 model (net.isInt16() false):
//   net.run(canvas, n, qp, logits, scratch);            // canvas: 3 planes of (2N+1)^2 floats, N = 4..32
//   int16_t ilogits[35];                                // an int16 model: integer samples in, integer logits out
//   net.runInt(icanvas, n, qp, bitDepth, ilogits, scratch);  // icanvas: 3 planes of (2N+1)^2 int32
//
// Speed: the convolutions run channels-last (HWC) with a zero border, CV vectors of 8 output channels x P
// pixels of accumulators in registers (AVX2/AVX-512 with FMA, by the compiler flags as cnnw_simd.h; portable
// loops otherwise), weights repacked at load. scripts/bench_modenet_cpp.py measures the time per block.
#ifndef CNNW_MODENET_H
#define CNNW_MODENET_H

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cnnw_format.h"
#include "cnnw_modenet_int16.h"

#if !defined(CNNW_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CNNW_MODENET_AVX2 1
#endif

namespace cnnw {

class ModeNet {
 public:
  enum { kModes = 35, kMaxChannels = 64, kMaxCanvas = 65, kMaxLevels = 4, kMaxQ = 16 };
  // Per-thread working memory (sized on first use, then reused).
  struct Scratch {
    std::vector<float> canvas, a, b, vec, hid;
    std::vector<int16_t> icanvas, ia, ib, ivec, ihid;  // int16 models
    std::vector<uint32_t> iacc;
  };

  ModeNet()
      : poolTo_(0),
        normalise_(false),
        sizeHeads_(false),
        hidden_(0),
        lastCout_(0),
        qCanvas_(0),
        qFc1In_(0),
        qHeadIn_(0),
        precision_(kFloat32),
        version_(0),
        checksum_(0) {}
  bool loaded() const { return !convs_.empty() || !iconvs_.empty(); }
  bool isInt16() const { return precision_ == kInt16; }
  uint32_t checksum() const { return checksum_; }
  std::string checksumHex() const { return hex32(checksum_); }
  int poolTo() const { return poolTo_; }
  // Multiply-accumulates of one block of side n (the convolutions and the dense layers).
  long macs(int n) const {
    int s = 2 * n + 1;
    if (poolTo_ && s > poolTo_) s = poolTo_;
    long m = 0;
    for (size_t l = 0; l < convs_.size(); ++l) m += static_cast<long>(s) * s * 9 * convs_[l].cin * convs_[l].cout;
    for (size_t l = 0; l < iconvs_.size(); ++l) m += static_cast<long>(s) * s * 9 * iconvs_[l].cin * iconvs_[l].cout;
    if (isInt16()) return m + static_cast<long>(ifc1_.in) * ifc1_.out + static_cast<long>(iheads_[0].in) * kModes;
    return m + static_cast<long>(fc1_.in) * fc1_.out + static_cast<long>(heads_[0].in) * heads_[0].out;
  }

  Status load(const std::string &path) {
    std::ifstream f(path.c_str(), std::ios::binary);
    if (!f) return Status::bad(path + ": cannot open the mode model file");
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Status st = loadFromMemory(data.empty() ? nullptr : &data[0], data.size());
    if (!st.ok) st.message = path + ": " + st.message;
    return st;
  }

  Status loadFromMemory(const uint8_t *data, size_t size) {
    Status st = parse(data, size);
    if (!st.ok) {
      convs_.clear();
      iconvs_.clear();
      checksum_ = version_ = 0;
    }
    return st;
  }

  // The 35 logits of one block: canvas = 3 planes of (2N+1) x (2N+1) (original block, references, their
  // availability; samples divided by the bit depth's peak), n = 4, 8, 16 or 32, qp the block's QP.
  Status run(const float *canvas, int n, int qp, float *logits, Scratch &s) const {
    if (!loaded()) return Status::bad("no mode model loaded");
    if (isInt16()) return Status::bad("an int16 mode network runs on integer samples (runInt), not on a float canvas");
    if (n != 4 && n != 8 && n != 16 && n != 32) return Status::bad("block size " + decimal(n) + " is not 4..32");
    int side = 2 * n + 1;
    float sideIn[3] = {static_cast<float>(std::log2(static_cast<float>(n)) / 5.0f), static_cast<float>(qp) / 51.0f,
                       0.0f};
    const float *x = canvas;
    if (normalise_) {
      s.canvas.resize(3 * side * side);
      sideIn[2] = normalise(canvas, n, &s.canvas[0]);
      x = &s.canvas[0];
    }
    // average pooling (adaptive) into the first convolution's zero-bordered HWC input
    const int out = (poolTo_ && side > poolTo_) ? poolTo_ : side, w = out + 2;
    s.a.assign(static_cast<size_t>(w) * w * 3 + 8, 0.0f);
    if (out == side) {
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < side; ++y)
          for (int xx = 0; xx < side; ++xx) s.a[((y + 1) * w + xx + 1) * 3 + c] = x[(c * side + y) * side + xx];
    } else {
      for (int i = 0; i < out; ++i) {
        const int y0 = i * side / out, y1 = ((i + 1) * side + out - 1) / out;
        for (int j = 0; j < out; ++j) {
          const int x0 = j * side / out, x1 = ((j + 1) * side + out - 1) / out;
          const float inv = 1.0f / static_cast<float>((y1 - y0) * (x1 - x0));
          for (int c = 0; c < 3; ++c) {
            float sum = 0.0f;
            for (int y = y0; y < y1; ++y)
              for (int xx = x0; xx < x1; ++xx) sum += x[(c * side + y) * side + xx];
            s.a[((i + 1) * w + j + 1) * 3 + c] = sum * inv;
          }
        }
      }
    }
    std::vector<float> *in = &s.a, *o = &s.b;
    for (size_t l = 0; l < convs_.size(); ++l) {
      const Conv &cv = convs_[l];
      o->assign(static_cast<size_t>(w) * w * cv.coutPad + 8, 0.0f);
      conv3x3(cv, &(*in)[0], &(*o)[0], out);
      std::swap(in, o);
    }
    // spatial pyramid max pooling, channel-major per level (PyTorch's flatten order), then the side inputs
    const Conv &last = convs_.back();
    s.vec.resize(fc1_.in);
    size_t k = pyramid(&(*in)[0], out, last.coutPad, last.cout, &s.vec[0]);
    for (int i = 0; i < sideCount(); ++i) s.vec[k++] = sideIn[i];
    s.hid.resize(fc1_.outPad + 8 + heads_[0].outPad);
    dense(fc1_, &s.vec[0], &s.hid[0], true);
    for (int i = 0; i < sideCount(); ++i) s.hid[hidden_ + i] = sideIn[i];
    const int head = sizeHeads_ ? (n == 4 ? 0 : n == 8 ? 1 : n == 16 ? 2 : 3) : 0;
    float *y = &s.hid[fc1_.outPad + 8];
    dense(heads_[head], &s.hid[0], y, false);
    std::copy(y, y + kModes, logits);
    return Status::good();
  }

  // The 35 int16 logits of one block through an int16 model: canvas = 3 planes of (2N+1) x (2N+1) int32 (the
  // original block's samples, the reference samples, 0 where unavailable, their availability 0/1), n = 4..32,
  // qp the block's QP, bitDepth 1..16. The integer rules: hm_bridge/modenet.py.
  Status runInt(const int32_t *canvas, int n, int qp, int bitDepth, int16_t *logits, Scratch &s) const {
    if (!loaded()) return Status::bad("no mode model loaded");
    if (!isInt16()) return Status::bad("a float32 mode network runs on a float canvas (run), not on integer samples");
    if (n != 4 && n != 8 && n != 16 && n != 32) return Status::bad("block size " + decimal(n) + " is not 4..32");
    if (bitDepth < 1 || bitDepth > 16) return Status::bad("bit depth " + decimal(bitDepth) + " is not 1..16");
    const int side = 2 * n + 1, peak = (1 << bitDepth) - 1;
    s.icanvas.resize(static_cast<size_t>(3) * side * side);
    int64_t dev = 0;
    if (normalise_)
      dev = modenet16::normaliseCanvas(canvas, n, peak, qCanvas_, &s.icanvas[0]);
    else
      modenet16::scaleCanvas(canvas, n, peak, qCanvas_, &s.icanvas[0]);
    const int out = (poolTo_ && side > poolTo_) ? poolTo_ : side, w = out + 2;
    s.ia.assign(static_cast<size_t>(w) * w * 3, 0);
    modenet16::poolCanvas(&s.icanvas[0], side, out, &s.ia[0]);  // out == side: a copy into HWC
    std::vector<int16_t> *in = &s.ia, *o = &s.ib;
    for (size_t l = 0; l < iconvs_.size(); ++l) {
      o->assign(static_cast<size_t>(w) * w * iconvs_[l].coutPad, 0);
      modenet16::conv3x3(iconvs_[l], &(*in)[0], &(*o)[0], out);
      std::swap(in, o);
    }
    // spatial pyramid max pooling, channel-major per level, then the side inputs (at fc1's input scale)
    s.ivec.resize(ifc1_.in);
    const size_t k = pyramid(&(*in)[0], out, iconvs_.back().coutPad, lastCout_, &s.ivec[0]);
    modenet16::sideInts(n, qp, normalise_, dev, qFc1In_, &s.ivec[k]);
    const modenet16::Dense &head = iheads_[sizeHeads_ ? (n == 4 ? 0 : n == 8 ? 1 : n == 16 ? 2 : 3) : 0];
    s.ihid.resize(ifc1_.outPad + 8 + head.outPad);
    s.iacc.resize(std::max(ifc1_.outPad, head.outPad));
    modenet16::dense(ifc1_, &s.ivec[0], &s.ihid[0], true, &s.iacc[0]);
    modenet16::sideInts(n, qp, normalise_, dev, qHeadIn_, &s.ihid[hidden_]);
    int16_t *y = &s.ihid[ifc1_.outPad + 8];
    modenet16::dense(head, &s.ihid[0], y, false, &s.iacc[0]);
    std::copy(y, y + kModes, logits);
    return Status::good();
  }

 private:
  struct Conv {
    int cin, cout, coutPad;
    std::vector<float> w, b;  // w: [ky][kx][ci][coutPad]; b: [coutPad]
  };
  struct Dense {
    int in, out, outPad;
    Dense() : in(0), out(0), outPad(0) {}
    std::vector<float> wt, b;  // wt: [in][outPad] (transposed, zero columns past out), b: [outPad]
  };

  // Spatial pyramid max pooling of the last convolution's out x out map (HWC, cp channels a pixel, a zero
  // border of 1), channel-major per level (PyTorch's flatten order), into vec; returns the values written.
  template <typename T>
  size_t pyramid(const T *map, int out, int cp, int cout, T *vec) const {
    const int w = out + 2;
    T cell[kMaxChannels];
    size_t k = 0;
    for (size_t lv = 0; lv < levels_.size(); ++lv) {
      const int L = levels_[lv], cells = L * L;
      for (int i = 0; i < L; ++i) {
        const int y0 = i * out / L, y1 = ((i + 1) * out + L - 1) / L;
        for (int j = 0; j < L; ++j) {
          const int x0 = j * out / L, x1 = ((j + 1) * out + L - 1) / L;
          std::fill(cell, cell + cp, static_cast<T>(0));  // after ReLU every value is >= 0
          for (int y = y0; y < y1; ++y)
            for (int xx = x0; xx < x1; ++xx) maxInto(cell, map + (static_cast<size_t>(y + 1) * w + xx + 1) * cp, cp);
          for (int c = 0; c < cout; ++c) vec[k + static_cast<size_t>(c) * cells + i * L + j] = cell[c];
        }
      }
      k += static_cast<size_t>(cout) * cells;
    }
    return k;
  }
  static void maxInto(int16_t *cell, const int16_t *px, int cp) { modenet16::maxInto(cell, px, cp); }

  // cell[c] = max(cell[c], px[c]) for c < cp (a multiple of 8).
  static void maxInto(float *cell, const float *px, int cp) {
#ifdef CNNW_MODENET_AVX2
    for (int c = 0; c < cp; c += 8)
      _mm256_storeu_ps(cell + c, _mm256_max_ps(_mm256_loadu_ps(cell + c), _mm256_loadu_ps(px + c)));
#else
    for (int c = 0; c < cp; ++c) cell[c] = std::max(cell[c], px[c]);
#endif
  }

  int sideCount() const { return normalise_ ? 3 : 2; }

  // modenet.normalise_canvas on one canvas; returns log2(deviation * 255) / 8.
  static float normalise(const float *c, int n, float *o) {
    const int side = 2 * n + 1, plane = side * side;
    const float *blk = c, *ref = c + plane, *av = c + 2 * plane;
    float count = 0.0f, sum = 0.0f;
    for (int i = 0; i < plane; ++i) count += av[i], sum += ref[i] * av[i];
    const float mean = count > 0.0f ? sum / std::max(count, 1.0f) : 0.5f;
    std::fill(o, o + 2 * plane, 0.0f);
    float ss = 0.0f;
    for (int y = 1; y <= n; ++y)
      for (int x = 1; x <= n; ++x) {
        const float d = blk[y * side + x] - mean;
        o[y * side + x] = d;
        ss += d * d;
      }
    for (int i = 0; i < plane; ++i) {
      const float d = (ref[i] - mean) * av[i];
      o[plane + i] = d;
      ss += d * d;
    }
    const float dev = std::max(std::sqrt(ss / (static_cast<float>(n * n) + count)), 2.0f / 255.0f);
    const float inv = 1.0f / dev;
    for (int i = 0; i < 2 * plane; ++i) o[i] *= inv;
    std::copy(av, av + plane, o + 2 * plane);
    return std::log2(dev * 255.0f) / 8.0f;
  }

#ifdef CNNW_MODENET_AVX2
  // NV vectors of 8 outputs from o0, accumulated in registers over all inputs.
  template <int NV>
  static void denseBlock(const Dense &d, const float *x, float *y, bool relu, int o0) {
    __m256 acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_loadu_ps(&d.b[o0 + 8 * v]);
    const float *r = &d.wt[o0];
    for (int i = 0; i < d.in; ++i, r += d.outPad) {
      const __m256 xi = _mm256_broadcast_ss(x + i);
      for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(xi, _mm256_loadu_ps(r + 8 * v), acc[v]);
    }
    for (int v = 0; v < NV; ++v)
      _mm256_storeu_ps(y + o0 + 8 * v, relu ? _mm256_max_ps(acc[v], _mm256_setzero_ps()) : acc[v]);
  }
#endif

  // y = W x + b (ReLU when relu), W stored transposed: y accumulates x[i] times row i; y has outPad places.
  static void dense(const Dense &d, const float *x, float *y, bool relu) {
#ifdef CNNW_MODENET_AVX2
    int o0 = 0;
    for (; o0 + 40 <= d.outPad; o0 += 40) denseBlock<5>(d, x, y, relu, o0);
    switch ((d.outPad - o0) / 8) {
      case 4:
        return denseBlock<4>(d, x, y, relu, o0);
      case 3:
        return denseBlock<3>(d, x, y, relu, o0);
      case 2:
        return denseBlock<2>(d, x, y, relu, o0);
      case 1:
        return denseBlock<1>(d, x, y, relu, o0);
      default:
        return;
    }
#else
    std::copy(d.b.begin(), d.b.end(), y);
    for (int i = 0; i < d.in; ++i) {
      const float xi = x[i];
      const float *r = &d.wt[static_cast<size_t>(i) * d.outPad];
      for (int o = 0; o < d.outPad; ++o) y[o] += xi * r[o];
    }
    if (relu)
      for (int o = 0; o < d.outPad; ++o) y[o] = std::max(y[o], 0.0f);
#endif
  }

#ifdef CNNW_MODENET_AVX2
  // P output pixels of one row x CV vectors of 8 channels, accumulated in registers; ReLU at the end.
  template <int CV, int P>
  static void convPixels(const Conv &cv, const float *in, float *out, int w, int y, int x) {
    __m256 acc[P][CV];
    for (int v = 0; v < CV; ++v) {
      const __m256 b = _mm256_loadu_ps(&cv.b[8 * v]);
      for (int p = 0; p < P; ++p) acc[p][v] = b;
    }
    const int cin = cv.cin;
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) {
        const float *ip = in + (static_cast<size_t>(y + ky) * w + x + kx) * cin;
        const float *wp = &cv.w[static_cast<size_t>(ky * 3 + kx) * cin * cv.coutPad];
        for (int ci = 0; ci < cin; ++ci, wp += cv.coutPad) {
          __m256 wv[CV];
          for (int v = 0; v < CV; ++v) wv[v] = _mm256_loadu_ps(wp + 8 * v);
          for (int p = 0; p < P; ++p) {
            const __m256 s = _mm256_broadcast_ss(ip + p * cin + ci);
            for (int v = 0; v < CV; ++v) acc[p][v] = _mm256_fmadd_ps(s, wv[v], acc[p][v]);
          }
        }
      }
    const __m256 zero = _mm256_setzero_ps();
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < CV; ++v)
        _mm256_storeu_ps(out + (static_cast<size_t>(y + 1) * w + x + p + 1) * cv.coutPad + 8 * v,
                         _mm256_max_ps(acc[p][v], zero));
  }

  template <int CV>
  static void convRows(const Conv &cv, const float *in, float *out, int s) {
    enum { P = CV <= 2 ? 4 : 2 };
    const int w = s + 2;
    for (int y = 0; y < s; ++y) {
      int x = 0;
      for (; x + P <= s; x += P) convPixels<CV, P>(cv, in, out, w, y, x);
      for (; x < s; ++x) convPixels<CV, 1>(cv, in, out, w, y, x);
    }
  }
#endif

  // 3x3 convolution with padding 1 and ReLU: in (s+2)^2 x cin and out (s+2)^2 x coutPad, HWC, zero borders.
  static void conv3x3(const Conv &cv, const float *in, float *out, int s) {
#ifdef CNNW_MODENET_AVX2
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
    const int w = s + 2, cp = cv.coutPad;
    std::vector<float> acc(cp);
    for (int y = 0; y < s; ++y)
      for (int x = 0; x < s; ++x) {
        std::copy(cv.b.begin(), cv.b.end(), acc.begin());
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx) {
            const float *ip = in + (static_cast<size_t>(y + ky) * w + x + kx) * cv.cin;
            const float *wp = &cv.w[static_cast<size_t>(ky * 3 + kx) * cv.cin * cp];
            for (int ci = 0; ci < cv.cin; ++ci, wp += cp)
              for (int co = 0; co < cp; ++co) acc[co] += ip[ci] * wp[co];
          }
        float *op = out + (static_cast<size_t>(y + 1) * w + x + 1) * cp;
        for (int co = 0; co < cp; ++co) op[co] = std::max(acc[co], 0.0f);
      }
  }

  // Checks tensor ``t`` exists with the given dims (d1 = 0: rank 1) and holds values of the model's precision
  // (int16 models: ``dtype`` 1 int16 weights, 2 int32 biases; 0: either).
  bool tensorIs(const std::vector<Tensor> &ts, int32_t t, uint32_t d0, uint32_t d1, uint32_t dtype = 0) const {
    if (t < 0 || static_cast<size_t>(t) >= ts.size()) return false;
    const Tensor &x = ts[t];
    if (precision_ == kInt16 ? (x.idata.empty() || (dtype && x.dtype != dtype)) : x.data.empty()) return false;
    return d1 ? (x.dims.size() == 2 && x.dims[0] == d0 && x.dims[1] == d1) : (x.dims.size() == 1 && x.dims[0] == d0);
  }

  // The int16 scale rule of a layer: bias at q_w + q_in; the rescale shift q_w + q_in - q_out in range.
  static bool scalesFit(const Tensor &w, const Tensor &b, int qIn, int qOut, int &shift) {
    shift = w.frac + qIn - qOut;
    return b.frac == w.frac + qIn && shift >= -16 && shift <= 62;
  }

  bool denseFrom(const std::vector<Tensor> &ts, int32_t wi, int32_t bi, int out, int in, int qIn, int qOut, Dense &d,
                 modenet16::Dense &di) const {
    if (!tensorIs(ts, wi, out, in, 1) || !tensorIs(ts, bi, out, 0, 2)) return false;
    const int outPad = (out + 7) / 8 * 8;
    if (precision_ == kInt16) {
      di.in = in, di.out = out, di.outPad = outPad;
      if (!scalesFit(ts[wi], ts[bi], qIn, qOut, di.shift)) return false;
      di.wt.assign(static_cast<size_t>(in) * outPad, 0);
      for (int o = 0; o < out; ++o)
        for (int i = 0; i < in; ++i)
          di.wt[static_cast<size_t>(i) * outPad + o] = ts[wi].idata[static_cast<size_t>(o) * in + i];
      di.b.assign(outPad, 0);
      std::copy(ts[bi].idata.begin(), ts[bi].idata.end(), di.b.begin());
      return true;
    }
    d.in = in, d.out = out, d.outPad = outPad;
    d.wt.assign(static_cast<size_t>(in) * d.outPad, 0.0f);
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i)
        d.wt[static_cast<size_t>(i) * d.outPad + o] = ts[wi].data[static_cast<size_t>(o) * in + i];
    d.b.assign(d.outPad, 0.0f);
    std::copy(ts[bi].data.begin(), ts[bi].data.end(), d.b.begin());
    return true;
  }

  // A 3x3 convolution's weights (Cout, cin, 3, 3) repacked [ky][kx][ci][coutPad] with cinPad input channels.
  template <typename T>
  static void packConv(const std::vector<T> &w, const std::vector<T> &b, int cout, int cin, int cinPad, int coutPad,
                       std::vector<T> &pw, std::vector<T> &pb) {
    pw.assign(static_cast<size_t>(9) * cinPad * coutPad, T());  // zero weights on padded channels
    pb.assign(coutPad, T());
    for (int co = 0; co < cout; ++co) {
      pb[co] = b[co];
      for (int ci = 0; ci < cin; ++ci)
        for (int t = 0; t < 9; ++t)
          pw[(static_cast<size_t>(t) * cinPad + ci) * coutPad + co] = w[(static_cast<size_t>(co) * cin + ci) * 9 + t];
    }
  }

  Status parse(const uint8_t *data, size_t size) {
    static const uint8_t empty = 0;
    Reader r(data ? data : &empty, data ? size : 0);
    const uint8_t *p;
    uint32_t version, stored = 0, precision, hlen, nt, nn;
    if (!r.bytes(4, p) || std::memcmp(p, "CNNW", 4) != 0) return Status::bad("not a .cnnw file (bad magic)");
    if (!r.u32(version)) return Status::bad("truncated header");
    if (version == kVersion || version == kLegacyVersion)
      return Status::bad("a luma filter (.cnnw version " + decimal(version) + "), not a mode network");
    if (version != kModesVersion)
      return Status::bad("unsupported .cnnw version " + decimal(version) + " (mode networks are version 3)");
    if (!r.u32(stored)) return Status::bad("truncated header");
    const uint32_t actual = crc32(data + kCheckedFrom, r.remaining());
    if (actual != stored)
      return Status::bad("the file is damaged: its CRC-32 is " + hex32(actual) + " but " + hex32(stored) +
                         " was written with it (altered or truncated after export); export the model again");
    if (!r.u32(precision) || !r.u32(hlen)) return Status::bad("truncated header");
    if (precision != kFloat32 && precision != kInt16)
      return Status::bad("unsupported precision " + decimal(precision) + " (0 float32, 1 int16)");
    precision_ = precision;
    if (hlen > kMaxHeader || !r.bytes(hlen, p)) return Status::bad("truncated or oversized JSON header");
    const std::string header(reinterpret_cast<const char *>(p), hlen);
    std::string arch;
    if (!json::topLevelValue(header, "arch", arch) || arch != "\"modenet\"")
      return Status::bad("the header's architecture is not \"modenet\"");
    std::vector<Tensor> ts;
    if (!r.u32(nt) || nt > kMaxNodes) return Status::bad("bad tensor count");
    for (uint32_t t = 0; t < nt; ++t) {
      Tensor ten;
      Status st = readTensor(r, precision, t, ten);
      if (!st.ok) return st;
      ts.push_back(ten);
    }
    std::vector<Node> nodes;
    if (!r.u32(nn) || nn < 2 || nn > kMaxNodes) return Status::bad("bad node count");
    for (uint32_t i = 0; i < nn; ++i) {
      Node n;
      uint32_t ni, np;
      if (!r.u32(n.op) || n.op >= OP_COUNT) return Status::bad("node " + decimal(i) + ": unknown op");
      if (!r.u32(ni) || ni != (i ? 1u : 0u)) return Status::bad("node " + decimal(i) + ": not a chain");
      uint32_t in = 0;
      if (ni && (!r.u32(in) || in + 1 != i)) return Status::bad("node " + decimal(i) + ": not a chain");
      if (!r.u32(np) || np > kMaxParams) return Status::bad("node " + decimal(i) + ": bad parameter count");
      for (uint32_t k = 0; k < np; ++k) {
        int32_t v;
        if (!r.i32(v)) return Status::bad("truncated node parameters");
        n.params.push_back(v);
      }
      nodes.push_back(n);
    }
    if (r.remaining() != 0) return Status::bad("trailing bytes after the last node");
    convs_.clear();
    iconvs_.clear();
    levels_.clear();
    heads_.clear();
    iheads_.clear();
    const Status bad = Status::bad("the nodes are not a mode network's chain (hm_bridge/modenet.py)");
    // int16 files: every node's last parameter is its output scale q (0..kMaxQ); strip it into qs
    const bool fixed = precision == kInt16;
    std::vector<int> qs(nodes.size(), 0);
    for (size_t k = 0; k < nodes.size() && fixed; ++k) {
      if (nodes[k].params.empty() || nodes[k].params.back() < 0 || nodes[k].params.back() > kMaxQ) return bad;
      qs[k] = nodes[k].params.back();
      nodes[k].params.pop_back();
    }
    size_t i = 0;
    if (nodes[i++].op != OP_INPUT || !nodes[0].params.empty()) return bad;
    normalise_ = i < nodes.size() && nodes[i].op == OP_NORMALISE && nodes[i].params.empty();
    if (normalise_) ++i;
    poolTo_ = 0;
    if (i < nodes.size() && nodes[i].op == OP_AVG_POOL) {
      if (nodes[i].params.size() != 1 || nodes[i].params[0] < 1 || nodes[i].params[0] > kMaxCanvas) return bad;
      poolTo_ = nodes[i++].params[0];
    }
    qCanvas_ = qs[0];
    for (size_t k = 1; k < i; ++k)
      if (qs[k] != qCanvas_) return bad;  // the canvas keeps one scale until the first convolution
    // the true and the stored (padded to 8) input channels of the next layer
    int cin = 3, cinPad = 3;
    int q = qCanvas_;
    while (i + 1 < nodes.size() && nodes[i].op == OP_CONV2D && nodes[i + 1].op == OP_RELU) {
      const std::vector<int32_t> &c = nodes[i].params;
      if (c.size() != 4 || c[2] != 1 || c[3] != 1 || c[0] < 0 || static_cast<size_t>(c[0]) >= ts.size() ||
          !nodes[i + 1].params.empty() || qs[i + 1] != qs[i])
        return bad;
      const Tensor &W = ts[c[0]];
      if (W.dims.size() != 4 || W.dims[1] != static_cast<uint32_t>(cin) || W.dims[2] != 3 || W.dims[3] != 3 ||
          W.dims[0] < 1 || W.dims[0] > kMaxChannels || (fixed ? (W.idata.empty() || W.dtype != 1) : W.data.empty()) ||
          !tensorIs(ts, c[1], W.dims[0], 0, 2))
        return bad;
      const int cout = static_cast<int>(W.dims[0]), coutPad = (cout + 7) / 8 * 8;
      if (fixed) {
        modenet16::Conv cv;
        cv.cin = cinPad, cv.cout = cout, cv.coutPad = coutPad;
        if (!scalesFit(W, ts[c[1]], q, qs[i], cv.shift)) return bad;
        packConv(W.idata, ts[c[1]].idata, cout, cin, cinPad, coutPad, cv.w, cv.b);
        iconvs_.push_back(cv);
      } else {
        Conv cv;
        cv.cin = cinPad, cv.cout = cout, cv.coutPad = coutPad;
        packConv(W.data, ts[c[1]].data, cout, cin, cinPad, coutPad, cv.w, cv.b);
        convs_.push_back(cv);
      }
      cin = cout, cinPad = coutPad, q = qs[i];
      i += 2;
    }
    if (cin == 3 || i >= nodes.size() || nodes[i].op != OP_SPP_MAX || qs[i] != q) return bad;
    const std::vector<int32_t> &lv = nodes[i++].params;
    if (lv.empty() || lv.size() > kMaxLevels) return bad;
    int cells = 0;
    for (size_t k = 0; k < lv.size(); ++k) {
      if (lv[k] < 1 || lv[k] > 9 || (poolTo_ && lv[k] > poolTo_)) return bad;
      levels_.push_back(lv[k]);
      cells += lv[k] * lv[k];
    }
    lastCout_ = cin;
    const int side = sideCount(), pooled = cin * cells;
    if (i + 2 >= nodes.size() || nodes[i].op != OP_DENSE || nodes[i].params.size() != 3 || nodes[i].params[2] != 1 ||
        nodes[i + 1].op != OP_RELU || !nodes[i + 1].params.empty() || qs[i + 1] != qs[i] || ts.empty())
      return bad;
    const int32_t fw = nodes[i].params[0];
    if (fw < 0 || static_cast<size_t>(fw) >= ts.size() || ts[fw].dims.size() != 2 || ts[fw].dims[0] < 1 ||
        ts[fw].dims[0] > 4096)
      return bad;
    hidden_ = static_cast<int>(ts[fw].dims[0]);
    qFc1In_ = q;
    if (!denseFrom(ts, fw, nodes[i].params[1], hidden_, pooled + side, q, qs[i], fc1_, ifc1_)) return bad;
    qHeadIn_ = q = qs[i];
    i += 2;
    const Node &h = nodes[i];
    sizeHeads_ = h.op == OP_HEADS;
    if (i + 1 != nodes.size() ||
        (sizeHeads_ ? h.params.size() != 8 : (h.op != OP_DENSE || h.params.size() != 3 || h.params[2] != 1)))
      return bad;
    for (int k = 0; k < (sizeHeads_ ? 4 : 1); ++k) {
      Dense d;
      modenet16::Dense di;
      if (!denseFrom(ts, h.params[2 * k], h.params[2 * k + 1], kModes, hidden_ + side, q, qs[i], d, di)) return bad;
      if (fixed)
        iheads_.push_back(di);
      else
        heads_.push_back(d);
    }
    version_ = version;
    checksum_ = stored;
    return Status::good();
  }

  std::vector<Conv> convs_;              // float32 models
  std::vector<modenet16::Conv> iconvs_;  // int16 models
  modenet16::Dense ifc1_;
  std::vector<modenet16::Dense> iheads_;
  std::vector<int> levels_;
  Dense fc1_;
  std::vector<Dense> heads_;
  int poolTo_;
  bool normalise_, sizeHeads_;
  int hidden_, lastCout_;
  int qCanvas_, qFc1In_, qHeadIn_;  // int16 models: the scales of the canvas, fc1's input and the heads' input
  uint32_t precision_, version_, checksum_;
};

// The k modes of highest logit (ties: the lower mode), in order of rank (float32 or int16 logits).
template <typename T>
inline int topModes(const T *logits, int k, int *modes) {
  k = std::max(0, std::min(k, static_cast<int>(ModeNet::kModes)));
  int order[ModeNet::kModes];
  for (int m = 0; m < ModeNet::kModes; ++m) order[m] = m;
  std::partial_sort(order, order + k, order + ModeNet::kModes,
                    [logits](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::copy(order, order + k, modes);
  return k;
}

}  // namespace cnnw

#endif  // CNNW_MODENET_H
