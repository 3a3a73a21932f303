// cnnw.h -- dependency-free C++11 inference of codecnn networks exported as .cnnw files.
//
// The file format and the op enum are specified in hm_bridge/format.py; this reader mirrors it
// (keep the two in step: enum Op below == INPUT..CROP there, same field order).
//
// Use (e.g. from HM after SAO, on the luma plane of a TComPicYuv):
//   cnnw::Model model;
//   cnnw::Status st = model.load("model.cnnw");
//   if (!st.ok) { /* st.message says why */ }
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp);
//
// Every count, dimension, index and length read from a file is checked before use: a damaged or
// truncated file gives a Status with a message, never a crash or an out-of-bounds read. Nothing aborts.
#ifndef CNNW_H
#define CNNW_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cnnw {

static const uint32_t kVersion = 1;
static const uint32_t kFloat32 = 0;
static const uint32_t kMaxDims = 4, kMaxNodes = 1u << 16, kMaxHeader = 1u << 20, kMaxParams = 64;
static const uint64_t kMaxTensorValues = 1ull << 26;

// Mirrors hm_bridge/format.py (INPUT, QP_PLANE, CONCAT, CONV2D, RELU, ADD, CROP).
enum Op : uint32_t { OP_INPUT = 0, OP_QP_PLANE = 1, OP_CONCAT = 2, OP_CONV2D = 3, OP_RELU = 4, OP_ADD = 5,
                     OP_CROP = 6, OP_COUNT = 7 };

struct Status {
  bool ok;
  std::string message;
  static Status good() { return Status{true, std::string()}; }
  static Status bad(const std::string &m) { return Status{false, m}; }
};

struct Tensor {
  std::vector<uint32_t> dims;
  std::vector<float> data;
};

struct Node {
  uint32_t op;
  std::vector<uint32_t> inputs;
  std::vector<int32_t> params;
  uint32_t channels;  // inferred at load time
};

// A C x H x W float buffer.
struct Buffer {
  int c, h, w;
  std::vector<float> v;
  Buffer() : c(0), h(0), w(0) {}
  Buffer(int c_, int h_, int w_) : c(c_), h(h_), w(w_), v(static_cast<size_t>(c_) * h_ * w_, 0.f) {}
  float *plane(int k) { return &v[static_cast<size_t>(k) * h * w]; }
  const float *plane(int k) const { return &v[static_cast<size_t>(k) * h * w]; }
};

class Reader {
 public:
  Reader(const uint8_t *d, size_t n) : d_(d), n_(n), pos_(0) {}
  bool u32(uint32_t &out) {
    if (n_ - pos_ < 4) return false;
    out = static_cast<uint32_t>(d_[pos_]) | (static_cast<uint32_t>(d_[pos_ + 1]) << 8) |
          (static_cast<uint32_t>(d_[pos_ + 2]) << 16) | (static_cast<uint32_t>(d_[pos_ + 3]) << 24);
    pos_ += 4;
    return true;
  }
  bool i32(int32_t &out) {
    uint32_t u;
    if (!u32(u)) return false;
    std::memcpy(&out, &u, 4);
    return true;
  }
  bool bytes(size_t count, const uint8_t *&out) {
    if (n_ - pos_ < count) return false;
    out = d_ + pos_;
    pos_ += count;
    return true;
  }
  size_t remaining() const { return n_ - pos_; }

 private:
  const uint8_t *d_;
  size_t n_, pos_;
};

class Model {
 public:
  Model() : context_(0) {}

  int context() const { return context_; }
  const std::string &header() const { return header_; }

  Status load(const std::string &path) {
    std::ifstream f(path.c_str(), std::ios::binary);
    if (!f) return Status::bad(path + ": cannot open the model file");
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Status st = loadFromMemory(data.empty() ? nullptr : &data[0], data.size());
    if (!st.ok) st.message = path + ": " + st.message;
    return st;
  }

  Status loadFromMemory(const uint8_t *data, size_t size) {
    tensors_.clear();
    nodes_.clear();
    static const uint8_t empty = 0;
    Reader r(data ? data : &empty, data ? size : 0);
    const uint8_t *magic;
    if (!r.bytes(4, magic) || std::memcmp(magic, "CNNW", 4) != 0) return Status::bad("not a .cnnw file (bad magic)");
    uint32_t version, precision, hlen;
    if (!r.u32(version) || !r.u32(precision) || !r.u32(hlen)) return Status::bad("truncated header");
    if (version != kVersion) return Status::bad("unsupported .cnnw version " + num(version));
    if (precision != kFloat32) return Status::bad("unsupported precision " + num(precision));
    const uint8_t *h;
    if (hlen > kMaxHeader || !r.bytes(hlen, h)) return Status::bad("truncated or oversized JSON header");
    header_.assign(reinterpret_cast<const char *>(h), hlen);
    if (!jsonInt("context", context_) || context_ < 0 || context_ > 64) return Status::bad("header lacks a context");
    if (header_.find("\"arch\": \"rdn\"") == std::string::npos) return Status::bad("unknown architecture in header");
    uint32_t nt;
    if (!r.u32(nt) || nt > kMaxNodes) return Status::bad("bad tensor count");
    for (uint32_t t = 0; t < nt; ++t) {
      Tensor ten;
      uint32_t nd;
      if (!r.u32(nd) || nd < 1 || nd > kMaxDims) return Status::bad("tensor " + num(t) + ": bad rank");
      uint64_t count = 1;
      for (uint32_t k = 0; k < nd; ++k) {
        uint32_t d;
        if (!r.u32(d)) return Status::bad("truncated tensor dims");
        count *= d;
        if (count > kMaxTensorValues) return Status::bad("tensor " + num(t) + " is too large");
        ten.dims.push_back(d);
      }
      const uint8_t *p;
      if (!r.bytes(static_cast<size_t>(count) * 4, p)) return Status::bad("truncated tensor data");
      ten.data.resize(static_cast<size_t>(count));
      for (size_t i = 0; i < ten.data.size(); ++i) {
        uint32_t u = static_cast<uint32_t>(p[4 * i]) | (static_cast<uint32_t>(p[4 * i + 1]) << 8) |
                     (static_cast<uint32_t>(p[4 * i + 2]) << 16) | (static_cast<uint32_t>(p[4 * i + 3]) << 24);
        std::memcpy(&ten.data[i], &u, 4);
      }
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
    return Status::good();
  }

  // Runs the graph on one tile (1 x side x side, samples in [0, 1]); residual is (side - 2 context)^2.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    std::vector<Buffer> vals(nodes_.size());
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const Node &n = nodes_[i];
      Buffer &out = vals[i];
      if (n.op == OP_INPUT) {
        out = Buffer(1, side, side);
        std::copy(tile, tile + static_cast<size_t>(side) * side, out.v.begin());
      } else if (n.op == OP_QP_PLANE) {
        const Buffer &a = vals[n.inputs[0]];
        out = Buffer(1, a.h, a.w);
        std::fill(out.v.begin(), out.v.end(), static_cast<float>(qp) / 51.0f);
      } else if (n.op == OP_CONCAT) {
        int c = 0;
        const Buffer &a0 = vals[n.inputs[0]];
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const Buffer &a = vals[n.inputs[k]];
          if (a.h != a0.h || a.w != a0.w) return Status::bad("concat of different sizes");
          c += a.c;
        }
        out = Buffer(c, a0.h, a0.w);
        size_t off = 0;
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const Buffer &a = vals[n.inputs[k]];
          std::copy(a.v.begin(), a.v.end(), out.v.begin() + off);
          off += a.v.size();
        }
      } else if (n.op == OP_CONV2D) {
        Status st = conv(n, vals[n.inputs[0]], out);
        if (!st.ok) return st;
      } else if (n.op == OP_RELU) {
        out = vals[n.inputs[0]];
        for (size_t k = 0; k < out.v.size(); ++k) out.v[k] = out.v[k] > 0.f ? out.v[k] : 0.f;
      } else if (n.op == OP_ADD) {
        const Buffer &a = vals[n.inputs[0]], &b = vals[n.inputs[1]];
        if (a.c != b.c || a.h != b.h || a.w != b.w) return Status::bad("add of different shapes");
        out = a;
        for (size_t k = 0; k < out.v.size(); ++k) out.v[k] += b.v[k];
      } else if (n.op == OP_CROP) {
        const Buffer &a = vals[n.inputs[0]];
        int k = n.params[0];
        if (a.h <= 2 * k || a.w <= 2 * k) return Status::bad("crop larger than the tile");
        out = Buffer(a.c, a.h - 2 * k, a.w - 2 * k);
        for (int ch = 0; ch < a.c; ++ch)
          for (int y = 0; y < out.h; ++y)
            std::copy(a.plane(ch) + static_cast<size_t>(y + k) * a.w + k,
                      a.plane(ch) + static_cast<size_t>(y + k) * a.w + k + out.w, out.plane(ch) + static_cast<size_t>(y) * out.w);
      }
      for (size_t k = 0; k < n.inputs.size(); ++k)  // free what no later node reads
        if (lastUse_[n.inputs[k]] == i) std::vector<float>().swap(vals[n.inputs[k]].v);
    }
    const Buffer &res = vals.back();
    int s = side - 2 * context_;
    if (res.c != 1 || res.h != s || res.w != s) return Status::bad("the network output does not match the tile");
    residual = res.v;
    return Status::good();
  }

  // Filters a luma plane CTU by CTU (context edge-replicated at the picture edges, as codecnn's
  // filter_plane): dst = clip(round((src/peak + residual) * peak)). src and dst may be the same plane.
  template <typename Pel>
  Status filterPlane(const Pel *src, ptrdiff_t srcStride, Pel *dst, ptrdiff_t dstStride, int width, int height,
                     int bitDepth, int qp, int ctu = 128, std::vector<float> *floatOut = nullptr) const {
    if (width <= 0 || height <= 0 || bitDepth < 1 || bitDepth > 16 || ctu <= 0)
      return Status::bad("bad plane geometry or bit depth");
    const int c = context_, side = ctu + 2 * c;
    const float peak = static_cast<float>((1 << bitDepth) - 1);
    std::vector<Pel> out(static_cast<size_t>(width) * height);
    if (floatOut) floatOut->assign(static_cast<size_t>(width) * height, 0.f);
    std::vector<float> tile(static_cast<size_t>(side) * side), res;
    for (int y0 = 0; y0 < height; y0 += ctu) {
      for (int x0 = 0; x0 < width; x0 += ctu) {
        for (int y = 0; y < side; ++y) {
          int sy = std::min(std::max(y0 + y - c, 0), height - 1);
          for (int x = 0; x < side; ++x) {
            int sx = std::min(std::max(x0 + x - c, 0), width - 1);
            tile[static_cast<size_t>(y) * side + x] = static_cast<float>(src[sy * srcStride + sx]) / peak;
          }
        }
        Status st = runTile(&tile[0], side, qp, res);
        if (!st.ok) return st;
        for (int y = 0; y < ctu && y0 + y < height; ++y) {
          for (int x = 0; x < ctu && x0 + x < width; ++x) {
            float v = tile[static_cast<size_t>(y + c) * side + x + c] + res[static_cast<size_t>(y) * ctu + x];
            if (floatOut) (*floatOut)[static_cast<size_t>(y0 + y) * width + x0 + x] = v;
            v = std::min(std::max(v, 0.f), 1.f) * peak;
            out[static_cast<size_t>(y0 + y) * width + x0 + x] = static_cast<Pel>(std::nearbyint(v));
          }
        }
      }
    }
    for (int y = 0; y < height; ++y)
      std::copy(&out[static_cast<size_t>(y) * width], &out[static_cast<size_t>(y) * width] + width, dst + y * dstStride);
    return Status::good();
  }

 private:
  static std::string num(uint64_t v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }

  bool jsonInt(const std::string &key, int &out) const {
    std::string k = "\"" + key + "\":";
    size_t p = header_.find(k);
    if (p == std::string::npos) return false;
    p += k.size();
    while (p < header_.size() && header_[p] == ' ') ++p;
    if (p >= header_.size() || header_[p] < '0' || header_[p] > '9') return false;
    long v = 0;
    while (p < header_.size() && header_[p] >= '0' && header_[p] <= '9' && v < 100000) v = v * 10 + (header_[p++] - '0');
    out = static_cast<int>(v);
    return true;
  }

  // Channel inference and parameter checks, node by node, at load time.
  Status infer(uint32_t i, Node &n) const {
    const std::string at = "node " + num(i) + ": ";
    switch (n.op) {
      case OP_INPUT:
        if (i != 0 || !n.inputs.empty()) return Status::bad(at + "input must be node 0");
        n.channels = 1;
        return Status::good();
      case OP_QP_PLANE:
      case OP_RELU:
      case OP_CROP:
        if (n.inputs.size() != 1) return Status::bad(at + "needs one input");
        if (n.op == OP_CROP && (n.params.size() != 1 || n.params[0] < 0 || n.params[0] > 64))
          return Status::bad(at + "bad crop");
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
        if (n.inputs.size() != 1 || n.params.size() != 4) return Status::bad(at + "bad conv");
        int32_t w = n.params[0], b = n.params[1], pad = n.params[2], groups = n.params[3];
        if (w < 0 || b < 0 || static_cast<size_t>(w) >= tensors_.size() || static_cast<size_t>(b) >= tensors_.size())
          return Status::bad(at + "conv tensor index out of range");
        const Tensor &W = tensors_[w], &B = tensors_[b];
        if (W.dims.size() != 4 || B.dims.size() != 1 || W.dims[2] != W.dims[3] || W.dims[2] == 0 || W.dims[2] > 15 ||
            B.dims[0] != W.dims[0] || W.dims[0] == 0 || W.dims[1] == 0)
          return Status::bad(at + "conv tensors have bad shapes");
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

  Status conv(const Node &n, const Buffer &in, Buffer &out) const {
    const Tensor &W = tensors_[n.params[0]], &B = tensors_[n.params[1]];
    const int pad = n.params[2], groups = n.params[3];
    const int cout = static_cast<int>(W.dims[0]), cin_g = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
    const int oh = in.h + 2 * pad - k + 1, ow = in.w + 2 * pad - k + 1;
    if (oh <= 0 || ow <= 0) return Status::bad("convolution larger than the tile");
    out = Buffer(cout, oh, ow);
    const int cout_g = cout / groups;
    for (int co = 0; co < cout; ++co) {
      float *o = out.plane(co);
      std::fill(o, o + static_cast<size_t>(oh) * ow, B.data[co]);
      const int g = co / cout_g;
      for (int ci = 0; ci < cin_g; ++ci) {
        const float *src = in.plane(g * cin_g + ci);
        for (int ky = 0; ky < k; ++ky) {
          for (int kx = 0; kx < k; ++kx) {
            const float wv = W.data[((static_cast<size_t>(co) * cin_g + ci) * k + ky) * k + kx];
            const int dy = ky - pad, dx = kx - pad;
            const int x_lo = std::max(0, -dx), x_hi = std::min(ow, in.w - dx);
            for (int y = std::max(0, -dy); y < std::min(oh, in.h - dy); ++y) {
              const float *s = src + static_cast<size_t>(y + dy) * in.w + dx;
              float *d = o + static_cast<size_t>(y) * ow;
              for (int x = x_lo; x < x_hi; ++x) d[x] += wv * s[x];
            }
          }
        }
      }
    }
    return Status::good();
  }

  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
  std::vector<size_t> lastUse_;
  std::string header_;
  int context_;
};

}  // namespace cnnw

#endif  // CNNW_H
