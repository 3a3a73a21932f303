// cnnw_model.h -- class Model of cnnw.h (as SADL's model.h): a .cnnw file's loading and checks (load, parse,
// infer), the graph runner (runGraph on one tile, runTile / runTileInt) and filterPlane (a luma plane CTU by
// CTU, with threads). The layers are in cnnw_layers.h and cnnw_conv.h, the buffers in cnnw_buffer.h.
#ifndef CNNW_MODEL_H
#define CNNW_MODEL_H

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cnnw_buffer.h"
#include "cnnw_conv.h"
#include "cnnw_format.h"
#include "cnnw_layers.h"
#include "cnnw_profile.h"
#include "cnnw_simd.h"
#include "cnnw_tiles.h"

namespace cnnw {

class Model {
 public:
  Model() : context_(0), margin_(0), precision_(kFloat32), version_(0), checksum_(0) {}
  bool isInt16() const { return precision_ == kInt16; }

  int context() const { return context_; }
  const std::string &header() const { return header_; }
  // The loaded file's format version, and its CRC-32 (hasChecksum(): false for a version 1 file, whose
  // checksum() is 0). Print it to check that an encoder and a decoder run the same weights.
  uint32_t version() const { return version_; }
  bool hasChecksum() const { return version_ >= 2; }
  uint32_t checksum() const { return checksum_; }
  // The checksum as tools print it (and as Python's f"{crc:#010x}"), e.g. "0x1a2b3c4d".
  std::string checksumHex() const { return hex(checksum_); }

  // Loads a .cnnw file. Not ok: the message names the file and says why (e.g. "PATH: the file is damaged
  // ..."). Ok with a non-empty message: loaded, with a warning naming the file for the caller to print.
  Status load(const std::string &path) {
    std::ifstream f(path.c_str(), std::ios::binary);
    if (!f) return Status::bad(path + ": cannot open the model file");
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Status st = loadFromMemory(data.empty() ? nullptr : &data[0], data.size());
    if (!st.message.empty()) st.message = path + ": " + st.message;
    return st;
  }

  // As load(), from bytes in memory; on failure the model is left empty (nothing runs).
  Status loadFromMemory(const uint8_t *data, size_t size) {
    Status st = parse(data, size);
    if (!st.ok) {
      tensors_.clear();
      nodes_.clear();
      lastUse_.clear();
      plans_.clear();
      header_.clear();
      version_ = checksum_ = 0;
    }
    return st;
  }

 private:
  Status parse(const uint8_t *data, size_t size) {
    tensors_.clear();
    nodes_.clear();
    version_ = checksum_ = 0;
    static const uint8_t empty = 0;
    Reader r(data ? data : &empty, data ? size : 0);
    const uint8_t *magic;
    if (!r.bytes(4, magic) || std::memcmp(magic, "CNNW", 4) != 0) return Status::bad("not a .cnnw file (bad magic)");
    uint32_t version, precision, hlen;
    if (!r.u32(version)) return Status::bad("truncated header");
    if (version == kModesVersion)
      return Status::bad("a mode network (.cnnw version 3, for the encoder's intra mode search), not a luma filter");
    if (version != kVersion && version != kLegacyVersion)
      return Status::bad("unsupported .cnnw version " + num(version) + " (this reader knows versions 1 and 2)");
    uint32_t stored = 0;
    if (version >= 2) {  // the checksum before anything else: a damaged file is refused as such
      if (!r.u32(stored)) return Status::bad("truncated header");
      const uint32_t actual = crc32(data + kCheckedFrom, r.remaining());
      if (actual != stored)
        return Status::bad("the file is damaged: its CRC-32 is " + hex(actual) + " but " + hex(stored) +
                           " was written with it (altered or truncated after export); export the model again or "
                           "copy it again");
    }
    if (!r.u32(precision) || !r.u32(hlen)) return Status::bad("truncated header");
    if (precision != kFloat32 && precision != kInt16) return Status::bad("unsupported precision " + num(precision));
    precision_ = precision;
    const uint8_t *h;
    if (hlen > kMaxHeader || !r.bytes(hlen, h)) return Status::bad("truncated or oversized JSON header");
    header_.assign(reinterpret_cast<const char *>(h), hlen);
    std::string arch;
    if (!headerInt("context", context_) || context_ < 0 || context_ > 64) return Status::bad("header lacks a context");
    if (!headerString("arch", arch) || arch != "rdn") return Status::bad("unknown architecture in header");
    uint32_t nt;
    if (!r.u32(nt) || nt > kMaxNodes) return Status::bad("bad tensor count");
    for (uint32_t t = 0; t < nt; ++t) {
      Tensor ten;
      Status st = readTensor(r, precision_, t, ten);
      if (!st.ok) return st;
      tensors_.push_back(ten);
    }
    uint32_t nn;
    if (!r.u32(nn) || nn < 2 || nn > kMaxNodes) return Status::bad("bad node count");
    for (uint32_t i = 0; i < nn; ++i) {
      Node n;
      uint32_t ni, np;
      if (!r.u32(n.op) || n.op >= OP_COUNT) return Status::bad("node " + num(i) + ": unknown op");
      if (!r.u32(ni) || ni > i || ni > kMaxNodes) return Status::bad("node " + num(i) + ": bad input count");
      for (uint32_t k = 0; k < ni; ++k) {
        uint32_t in;
        if (!r.u32(in) || in >= i) return Status::bad("node " + num(i) + ": input is not an earlier node");
        n.inputs.push_back(in);
      }
      if (!r.u32(np) || np > kMaxParams) return Status::bad("node " + num(i) + ": bad parameter count");
      for (uint32_t k = 0; k < np; ++k) {
        int32_t v;
        if (!r.i32(v)) return Status::bad("truncated node parameters");
        n.params.push_back(v);
      }
      Status st = infer(i, n);
      if (!st.ok) return st;
      nodes_.push_back(n);
    }
    if (nodes_[0].op != OP_INPUT) return Status::bad("node 0 is not the input");
    if (nodes_.back().channels != 1) return Status::bad("the last node is not a 1-channel residual");
    if (r.remaining() != 0) return Status::bad("trailing bytes after the last node");
    lastUse_.assign(nodes_.size(), 0);
    for (size_t i = 0; i < nodes_.size(); ++i)
      for (size_t k = 0; k < nodes_[i].inputs.size(); ++k) lastUse_[nodes_[i].inputs[k]] = i;
    margin_ = 0;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].op == OP_CONV2D) margin_ = std::max(margin_, static_cast<int>(nodes_[i].params[2]));
    buildPlans();
    version_ = version;
    checksum_ = stored;
    if (version == kLegacyVersion)
      return Status{true,
                    "warning: .cnnw version 1 has no checksum, so damage to its weights cannot be detected; "
                    "re-export it (codecnn export) to write version 2"};
    return Status::good();
  }

 public:
  // Runs the graph on one tile (1 x side x side, samples in [0, 1]); residual is (side - 2 context)^2.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual) const {
    std::vector<std::vector<float>> pool;
    return runTile(tile, side, qp, residual, pool);
  }

  // The same, recycling node buffers through ``pool`` (kept by the caller across tiles: no allocation, no
  // zero fill and no page faults after the first tile); ``profile``: the time of every node added to it.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual,
                 std::vector<std::vector<float>> &pool, std::vector<NodeTime> *profile = nullptr) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kFloat32) return Status::bad("runTile needs a float32 model; use runTileInt");
    if (side <= 2 * context_) return Status::bad("tile smaller than the context");
    std::vector<Buffer> vals(nodes_.size());
    Buffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side, margin_);
    in.clearMargins();
    for (int y = 0; y < side; ++y)
      std::copy(tile + static_cast<size_t>(y) * side, tile + static_cast<size_t>(y + 1) * side, &in.v[in.at(0, y, 0)]);
    Status st = runGraph(vals, qp, pool, profile);
    const Buffer &res = vals.back();
    const int s = side - 2 * context_;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) {
      residual.resize(static_cast<size_t>(s) * s);
      for (int y = 0; y < s; ++y)
        std::copy(&res.v[res.at(0, y, 0)], &res.v[res.at(0, y, 0)] + s, &residual[static_cast<size_t>(y) * s]);
    }
    release(vals, pool);
    return st;
  }

  // int16 models: runs one tile of integer samples (side x side) and writes the output samples
  // ((side - 2 context)^2, clipped to the bit depth), exactly as hm_bridge/fixed.py run_int_graph.
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples) const {
    std::vector<std::vector<int16_t>> pool;
    return runTileInt(samples, side, bitDepth, qp, outSamples, pool);
  }

  // The same, recycling node buffers through ``pool`` (as runTile), and with ``profile`` as runTile.
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples,
                    std::vector<std::vector<int16_t>> &pool, std::vector<NodeTime> *profile = nullptr) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kInt16) return Status::bad("runTileInt needs an int16 model");
    if (bitDepth < 1 || bitDepth > 16) return Status::bad("bad bit depth");
    if (side <= 2 * context_) return Status::bad("tile smaller than the context");
    const int64_t peak = (static_cast<int64_t>(1) << bitDepth) - 1;
    std::vector<IBuffer> vals(nodes_.size());
    IBuffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side, margin_);
    in.q = outScale(nodes_[0]);
    in.clearMargins();
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x)
        in.v[in.at(0, y, x)] = sat16(
            (static_cast<int64_t>(samples[static_cast<size_t>(y) * side + x]) * (static_cast<int64_t>(1) << in.q) +
             peak / 2) /
            peak);
    Status st = runGraph(vals, qp, pool, profile);
    const IBuffer &res = vals.back();
    const int c = context_, s = side - 2 * c, qin = in.q;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) {
      outSamples.resize(static_cast<size_t>(s) * s);
      for (int y = 0; y < s; ++y)
        for (int x = 0; x < s; ++x) {
          int64_t v =
              static_cast<int64_t>(in.v[in.at(0, y + c, x + c)]) + shiftRound(res.v[res.at(0, y, x)], res.q - qin);
          int64_t o = floorShift(v * peak + (static_cast<int64_t>(1) << (qin - 1)), qin);
          outSamples[static_cast<size_t>(y) * s + x] = static_cast<int32_t>(o < 0 ? 0 : (o > peak ? peak : o));
        }
    }
    release(vals, pool);
    return st;
  }

  // Filters a luma plane CTU by CTU (context edge-replicated at the picture edges, as codecnn's
  // filter_plane): dst = clip(round((src/peak + residual) * peak)). src and dst may be the same plane.
  // threads > 1: the CTUs are shared out among that many threads (this one included); each CTU is
  // computed exactly as with one thread, so the output is the same. If a thread cannot be started, the
  // others do its share. ``profile`` (optional): the time of every node, added to it (see NodeTime).
  template <typename Pel>
  Status filterPlane(const Pel *src, ptrdiff_t srcStride, Pel *dst, ptrdiff_t dstStride, int width, int height,
                     int bitDepth, int qp, int ctu = 128, std::vector<float> *floatOut = nullptr, int threads = 1,
                     std::vector<NodeTime> *profile = nullptr) const {
    if (width <= 0 || height <= 0 || bitDepth < 1 || bitDepth > 16 || ctu <= 0)
      return Status::bad("bad plane geometry or bit depth");
    if (nodes_.empty()) return Status::bad("no model loaded");
    std::vector<Pel> out(static_cast<size_t>(width) * height);
    if (floatOut) floatOut->assign(static_cast<size_t>(width) * height, 0.f);
    tiles::Job<Pel> job(src, srcStride, width, height, bitDepth, qp, ctu, &out[0],
                        floatOut ? &(*floatOut)[0] : nullptr);
    job.profile = profile;
    if (profile) profile->resize(nodes_.size());
    const int workers = std::max(1, std::min(threads, std::min(job.count, 256)));
    std::vector<std::thread> pool;
    for (int t = 1; t < workers; ++t) {
      try {
        pool.push_back(std::thread(&Model::filterCtus<Pel>, this, &job));
      } catch (...) {  // no more threads to be had (or no thread support linked in): fewer do the work
        break;
      }
    }
    filterCtus(&job);
    for (size_t t = 0; t < pool.size(); ++t) pool[t].join();
    if (!job.status.ok) return job.status;
    for (int y = 0; y < height; ++y)
      std::copy(&out[static_cast<size_t>(y) * width], &out[static_cast<size_t>(y) * width] + width,
                dst + y * dstStride);
    return Status::good();
  }

 private:
  // A worker of filterPlane: CTUs until there are none left (or one failed), with its own tile and node
  // buffers. Each output sample is written by the thread that computes its CTU, and by no other.
  template <typename Pel>
  void filterCtus(tiles::Job<Pel> *job) const {
    const int c = context_, ctu = job->ctu, side = ctu + 2 * c, width = job->width;
    const float peak = static_cast<float>((1 << job->bitDepth) - 1);
    const bool fixed = precision_ == kInt16;
    std::vector<float> tile(fixed ? 0 : static_cast<size_t>(side) * side), res;
    std::vector<int32_t> itile(fixed ? static_cast<size_t>(side) * side : 0), ires;
    std::vector<std::vector<float>> pool;  // node buffers, recycled from tile to tile
    std::vector<std::vector<int16_t>> ipool;
    std::vector<NodeTime> times, *profile = job->profile ? &times : nullptr;
    for (;;) {
      const int i = job->next++;
      if (i >= job->count || job->failed) break;
      const int y0 = (i / job->cols) * ctu, x0 = (i % job->cols) * ctu;
      const int hh = std::min(ctu, job->height - y0), ww = std::min(ctu, width - x0);
      Status st = Status::good();
      if (fixed) {
        tiles::fillTile(job->src, job->stride, width, job->height, c, x0, y0, side, &itile[0], tiles::SampleToInt());
        st = runTileInt(&itile[0], side, job->bitDepth, job->qp, ires, ipool, profile);
        if (st.ok)
          for (int y = 0; y < hh; ++y)
            for (int x = 0; x < ww; ++x)
              job->out[static_cast<size_t>(y0 + y) * width + x0 + x] =
                  static_cast<Pel>(ires[static_cast<size_t>(y) * ctu + x]);
      } else {
        tiles::fillTile(job->src, job->stride, width, job->height, c, x0, y0, side, &tile[0],
                        tiles::SampleToFloat(peak));
        st = runTile(&tile[0], side, job->qp, res, pool, profile);
        if (st.ok)
          for (int y = 0; y < hh; ++y) {
            for (int x = 0; x < ww; ++x) {
              float v = tile[static_cast<size_t>(y + c) * side + x + c] + res[static_cast<size_t>(y) * ctu + x];
              if (job->floatOut) job->floatOut[static_cast<size_t>(y0 + y) * width + x0 + x] = v;
              v = std::min(std::max(v, 0.f), 1.f) * peak;
              job->out[static_cast<size_t>(y0 + y) * width + x0 + x] = static_cast<Pel>(std::nearbyint(v));
            }
          }
      }
      if (!st.ok) {
        std::lock_guard<std::mutex> hold(job->lock);
        if (!job->failed) job->status = st;
        job->failed = true;
        break;
      }
    }
    if (profile) {
      std::lock_guard<std::mutex> hold(job->lock);
      for (size_t i = 0; i < times.size(); ++i) {
        NodeTime &t = (*job->profile)[i];
        t.op = times[i].op, t.cin = times[i].cin, t.cout = times[i].cout, t.k = times[i].k;
        t.macs += times[i].macs;
        t.seconds += times[i].seconds;
      }
    }
  }

  // The output scale of a node: its last parameter in int16 models, 0 (unused) in float ones.
  int outScale(const Node &n) const { return precision_ == kInt16 ? n.params.back() : 0; }

  // out = the first input of node i: moved when node i is its last reader and reads it only once (no
  // copy), else copied. The input tile (node 0) is never moved: the int16 path reads it again at the end.
  template <typename T>
  void takeOrCopy(std::vector<Buf<T>> &vals, const Node &n, size_t i, Buf<T> &out) const {
    const uint32_t in = n.inputs[0];
    if (in != 0 && lastUse_[in] == i && std::count(n.inputs.begin(), n.inputs.end(), in) == 1)
      std::swap(out, vals[in]);
    else
      out = vals[in];
  }

  // The graph on one tile, float or int16 (the one runner of runTile and runTileInt): vals[0] holds the
  // input tile; nodes take their buffers from ``pool`` and give back those no later node reads. ``profile``:
  // every node's time (and a convolution's work) added to its entry.
  template <typename T>
  Status runGraph(std::vector<Buf<T>> &vals, int qp, std::vector<std::vector<T>> &pool,
                  std::vector<NodeTime> *profile) const {
    if (profile) profile->resize(nodes_.size());
    for (size_t i = 1; i < nodes_.size(); ++i) {
      const Node &n = nodes_[i];
      const double start = profile ? profileClock() : 0;
      const int qo = outScale(n);
      Buf<T> &out = vals[i];
      recycle(out, pool);
      if (n.op == OP_QP_PLANE) {
        const Buf<T> &a = vals[n.inputs[0]];
        out.reshape(1, a.h, a.w, a.m);
        out.q = qo;
        layers::fillQp(out, qp);
      } else if (n.op == OP_CONCAT) {
        for (size_t k = 0; k < n.inputs.size(); ++k)
          if (vals[n.inputs[k]].q != qo) return Status::bad("concat of different scales");
        Status st = layers::concatInto(vals, n, out);
        if (!st.ok) return st;
        out.q = qo;
      } else if (n.op == OP_CONV2D) {
        Status st = conv(n, vals[n.inputs[0]], out);
        if (!st.ok) return st;
      } else if (n.op == OP_RELU) {
        takeOrCopy(vals, n, i, out);
        layers::relu(out);
      } else if (n.op == OP_ADD) {
        const Buf<T> &a = vals[n.inputs[0]], &b = vals[n.inputs[1]];
        if (a.c != b.c || a.h != b.h || a.w != b.w) return Status::bad("add of different shapes");
        const int aq = a.q;
        takeOrCopy(vals, n, i, out);  // b stays valid: an input read twice is copied, not moved
        out.q = qo;
        layers::addInto(out, aq, b);
      } else if (n.op == OP_CROP) {
        Status st = layers::cropInto(vals[n.inputs[0]], n.params[0], out);
        if (!st.ok) return st;
        out.q = vals[n.inputs[0]].q;
      }
      if (profile) {
        NodeTime &t = (*profile)[i];
        t.op = n.op;
        t.seconds += profileClock() - start;
        if (n.op == OP_CONV2D) {
          const Tensor &W = tensors_[n.params[0]];
          t.cout = static_cast<int>(W.dims[0]), t.cin = static_cast<int>(W.dims[1]), t.k = static_cast<int>(W.dims[2]);
          t.macs += static_cast<uint64_t>(out.h) * out.w * W.dims[0] * W.dims[1] * W.dims[2] * W.dims[3];
        }
      }
      for (size_t k = 0; k < n.inputs.size(); ++k)  // free what no later node reads (never the input tile)
        if (lastUse_[n.inputs[k]] == i && n.inputs[k] != 0) toPool(vals[n.inputs[k]], pool);
    }
    return Status::good();
  }

  static std::string num(uint64_t v) { return decimal(v); }
  static std::string hex(uint32_t v) { return hex32(v); }

  // The value of a top-level key of the JSON header: an integer, or a string without escapes.
  bool headerInt(const char *key, int &out) const {
    std::string v;
    if (!json::topLevelValue(header_, key, v) || v.empty() || v.size() > 6) return false;
    long n = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      if (v[k] < '0' || v[k] > '9') return false;
      n = n * 10 + (v[k] - '0');
    }
    out = static_cast<int>(n);
    return true;
  }

  bool headerString(const char *key, std::string &out) const {
    std::string v;
    if (!json::topLevelValue(header_, key, v) || v.size() < 2 || v[0] != '"' || v[v.size() - 1] != '"' ||
        v.find('\\') != std::string::npos)
      return false;
    out = v.substr(1, v.size() - 2);
    return true;
  }

  // Channel inference and parameter checks, node by node, at load time.
  Status infer(uint32_t i, Node &n) const {
    const std::string at = "node " + num(i) + ": ";
    const size_t extra = precision_ == kInt16 ? 1 : 0;  // int16: the output scale, last
    if (extra) {
      if (n.params.empty() || n.params.back() < 1 || n.params.back() > 30) return Status::bad(at + "bad output scale");
    }
    const size_t want = (n.op == OP_CONV2D ? 4 : (n.op == OP_CROP ? 1 : 0)) + extra;
    if (n.params.size() != want) return Status::bad(at + "wrong number of parameters");
    switch (n.op) {
      case OP_INPUT:
        if (i != 0 || !n.inputs.empty()) return Status::bad(at + "input must be node 0");
        n.channels = 1;
        return Status::good();
      case OP_QP_PLANE:
      case OP_RELU:
      case OP_CROP:
        if (n.inputs.size() != 1) return Status::bad(at + "needs one input");
        if (n.op == OP_CROP && (n.params[0] < 0 || n.params[0] > 64)) return Status::bad(at + "bad crop");
        n.channels = n.op == OP_QP_PLANE ? 1 : nodes_[n.inputs[0]].channels;
        return Status::good();
      case OP_CONCAT: {
        if (n.inputs.empty()) return Status::bad(at + "concat of nothing");
        uint64_t c = 0;
        for (size_t k = 0; k < n.inputs.size(); ++k) c += nodes_[n.inputs[k]].channels;
        if (c > 1u << 16) return Status::bad(at + "too many channels");
        n.channels = static_cast<uint32_t>(c);
        return Status::good();
      }
      case OP_ADD:
        if (n.inputs.size() != 2 || nodes_[n.inputs[0]].channels != nodes_[n.inputs[1]].channels)
          return Status::bad(at + "add needs two inputs with equal channels");
        n.channels = nodes_[n.inputs[0]].channels;
        return Status::good();
      case OP_CONV2D: {
        if (n.inputs.size() != 1) return Status::bad(at + "bad conv");
        int32_t w = n.params[0], b = n.params[1], pad = n.params[2], groups = n.params[3];
        if (w < 0 || b < 0 || static_cast<size_t>(w) >= tensors_.size() || static_cast<size_t>(b) >= tensors_.size())
          return Status::bad(at + "conv tensor index out of range");
        const Tensor &W = tensors_[w], &B = tensors_[b];
        if (W.dims.size() != 4 || B.dims.size() != 1 || W.dims[2] != W.dims[3] || W.dims[2] == 0 || W.dims[2] > 15 ||
            B.dims[0] != W.dims[0] || W.dims[0] == 0 || W.dims[1] == 0)
          return Status::bad(at + "conv tensors have bad shapes");
        if (extra && (W.dtype != 1 || B.dtype != 2))
          return Status::bad(at + "int16 conv needs int16 weights, int32 bias");
        if (!extra && (W.data.empty() || B.data.empty())) return Status::bad(at + "float conv without float tensors");
        if (groups < 1 || pad < 0 || pad > 7 || W.dims[0] % static_cast<uint32_t>(groups) != 0 ||
            static_cast<uint64_t>(W.dims[1]) * static_cast<uint32_t>(groups) != nodes_[n.inputs[0]].channels)
          return Status::bad(at + "conv does not fit its input");
        n.channels = W.dims[0];
        return Status::good();
      }
      default:
        return Status::bad(at + "unknown op");
    }
  }

  // A convolution node (cnnw_conv.h): its weights packed at load for the vector path (n.plan >= 0), or not.
  template <typename T>
  Status conv(const Node &n, const Buf<T> &in, Buf<T> &out) const {
    return layers::conv2d(tensors_[n.params[0]], tensors_[n.params[1]], n.params[2], n.params[3],
                          n.plan >= 0 ? &plans_[n.plan] : nullptr, precision_, outScale(n), in, out);
  }

  // Packs the weights of every convolution the vector kernels take (groups == 1), once, at load time.
  void buildPlans() {
    plans_.clear();
#ifdef CNNW_SIMD
    for (size_t i = 0; i < nodes_.size(); ++i) {
      Node &n = nodes_[i];
      if (n.op != OP_CONV2D || n.params[3] != 1) continue;
      n.plan = static_cast<int>(plans_.size());
      plans_.push_back(layers::buildPlan(tensors_[n.params[0]], tensors_[n.params[1]], precision_));
    }
#endif
  }

  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
  std::vector<size_t> lastUse_;
  std::vector<layers::ConvPlan> plans_;  // the vector path's packed weights (Node::plan)
  std::string header_;
  int context_;
  int margin_;  // zero margin of every buffer: the widest convolution padding
  uint32_t precision_;
  uint32_t version_;   // of the loaded file (0: none loaded)
  uint32_t checksum_;  // its CRC-32 (version 2), else 0
};

}  // namespace cnnw

#endif  // CNNW_MODEL_H
