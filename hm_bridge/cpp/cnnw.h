// cnnw.h -- dependency-free C++11 inference of codecnn networks exported as .cnnw files.
//
// The file format and the op enum are specified in hm_bridge/format.py; this reader mirrors it
// (keep the two in step: enum Op below == INPUT..CROP there, same field order). The int16 variant
// (precision 1) follows the integer rules of hm_bridge/fixed.py exactly: its output equals that
// Python twin sample for sample.
//
// Use (e.g. from HM after SAO, on the luma plane of a TComPicYuv):
//   cnnw::Model model;
//   cnnw::Status st = model.load("model.cnnw");
//   if (!st.ok) { /* st.message says why */ }
//   if (!st.message.empty()) { /* loaded, with a warning to print (a version 1 file) */ }
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp);
//
// Integrity: a version 2 file carries a CRC-32 (zlib's, as Python's zlib.crc32) of every byte after the
// checksum field (file offset 12 to the end: header, tensors, nodes). load() verifies it before reading
// anything else and refuses a mismatch ("the file is damaged ..."), so flipped bits in the weights never
// filter. checksum() gives it (HM's glue prints it at load, so encoder and decoder logs can be compared).
// Version 1 files (no checksum field) still load, with a warning in the returned Status's message.
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

// Vector kernels for x86 with AVX2 and FMA (compile with -mavx2 -mfma or -march=native); every other
// target, or CNNW_NO_SIMD defined, uses the portable loops. Both give the same int16 output (integer
// accumulation wraps modulo 2^32, so its order does not matter); the float paths differ by rounding.
#if defined(__AVX2__) && defined(__FMA__) && !defined(CNNW_NO_SIMD)
#define CNNW_AVX2 1
#include <immintrin.h>
#endif

namespace cnnw {

static const uint32_t kVersion = 2;        // written by hm_bridge/format.py; has the checksum
static const uint32_t kLegacyVersion = 1;  // still read, with a warning: no checksum
static const size_t kCheckedFrom = 12;     // the CRC-32 (at offset 8) covers the bytes from here to the end
static const uint32_t kFloat32 = 0, kInt16 = 1;
static const uint32_t kMaxDims = 4, kMaxNodes = 1u << 16, kMaxHeader = 1u << 20, kMaxParams = 64;
static const uint64_t kMaxTensorValues = 1ull << 26;

// Mirrors hm_bridge/format.py (INPUT, QP_PLANE, CONCAT, CONV2D, RELU, ADD, CROP).
enum Op : uint32_t {
  OP_INPUT = 0,
  OP_QP_PLANE = 1,
  OP_CONCAT = 2,
  OP_CONV2D = 3,
  OP_RELU = 4,
  OP_ADD = 5,
  OP_CROP = 6,
  OP_COUNT = 7
};

// ok: message empty, or a warning for the caller to print (load of a version 1 file); not ok: the error.
struct Status {
  bool ok;
  std::string message;
  static Status good() { return Status{true, std::string()}; }
  static Status bad(const std::string &m) { return Status{false, m}; }
};

struct Tensor {
  std::vector<uint32_t> dims;
  std::vector<float> data;     // float32 models
  std::vector<int32_t> idata;  // int16 models: int16 weights or int32 biases, widened
  int32_t frac;                // int16 models: power-of-two scale (fractional bits)
  uint32_t dtype;              // int16 models: 1 int16, 2 int32
  Tensor() : frac(0), dtype(0) {}
};

// A C x H x W buffer of samples T, as SADL's Tensor<T>: float (float32 models) or int16_t (int16 models,
// where q is the power-of-two scale of the samples: value = sample / 2^q; float buffers keep q = 0).
template <typename T>
struct Buf {
  int c, h, w, q;
  std::vector<T> v;
  Buf() : c(0), h(0), w(0), q(0) {}
  Buf(int c_, int h_, int w_, int q_ = 0) : c(c_), h(h_), w(w_), q(q_), v(static_cast<size_t>(c_) * h_ * w_, T()) {}
  // New dimensions on the storage it holds (a recycled vector): contents unspecified, every op overwrites.
  void reshape(int c_, int h_, int w_) {
    c = c_, h = h_, w = w_;
    v.resize(static_cast<size_t>(c_) * h_ * w_);
  }
  T *plane(int k) { return &v[static_cast<size_t>(k) * h * w]; }
  const T *plane(int k) const { return &v[static_cast<size_t>(k) * h * w]; }
};
typedef Buf<float> Buffer;     // float32 models
typedef Buf<int16_t> IBuffer;  // int16 models

// CRC-32 exactly as zlib's crc32() and Python's zlib.crc32 (reflected polynomial 0xEDB88320, initial
// value and final XOR 0xFFFFFFFF), table-driven, one byte at a time. Pass a previous result as ``crc`` to
// continue over more data.
inline uint32_t crc32(const uint8_t *data, size_t size, uint32_t crc = 0) {
  struct Table {
    uint32_t entry[256];
    Table() {
      for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : (c >> 1);
        entry[i] = c;
      }
    }
  };
  static const Table table;  // C++11: initialised once, thread-safely
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table.entry[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

// Integer helpers of hm_bridge/fixed.py: floor shift, round-half-up rescale, int16 saturation.
inline int64_t floorShift(int64_t v, int s) { return v >= 0 ? (v >> s) : -((-v - 1) >> s) - 1; }
inline int64_t shiftRound(int64_t v, int s) {
  return s > 0 ? floorShift(v + (static_cast<int64_t>(1) << (s - 1)), s) : v * (static_cast<int64_t>(1) << (-s));
}
inline int16_t sat16(int64_t v) { return static_cast<int16_t>(v < -32768 ? -32768 : (v > 32767 ? 32767 : v)); }

struct Node {
  uint32_t op;
  std::vector<uint32_t> inputs;
  std::vector<int32_t> params;
  uint32_t channels;  // inferred at load time
};

// A minimal reader of the JSON header (no JSON library): the raw text of the value of one top-level key,
// whatever the whitespace between tokens; nested objects, arrays and strings (with escapes) are skipped.
// A malformed header gives false, never a read out of bounds.
namespace json {
inline bool isSpace(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

inline size_t skipSpace(const std::string &s, size_t p) {
  while (p < s.size() && isSpace(s[p])) ++p;
  return p;
}

// p at an opening quote: the position after the closing one, or npos.
inline size_t skipString(const std::string &s, size_t p) {
  for (++p; p < s.size(); ++p) {
    if (s[p] == '\\')
      ++p;
    else if (s[p] == '"')
      return p + 1;
  }
  return std::string::npos;
}

// p at the first character of a value: the position after it, or npos.
inline size_t skipValue(const std::string &s, size_t p) {
  if (p >= s.size()) return std::string::npos;
  if (s[p] == '"') return skipString(s, p);
  if (s[p] == '{' || s[p] == '[') {
    size_t depth = 0;
    while (p < s.size()) {
      const char ch = s[p];
      if (ch == '"') {
        p = skipString(s, p);
        if (p == std::string::npos) return p;
        continue;
      }
      if (ch == '{' || ch == '[') {
        ++depth;
      } else if (ch == '}' || ch == ']') {
        if (--depth == 0) return p + 1;
      }
      ++p;
    }
    return std::string::npos;
  }
  size_t e = p;  // a number, true, false or null
  while (e < s.size() && s[e] != ',' && s[e] != '}' && s[e] != ']' && !isSpace(s[e])) ++e;
  return e == p ? std::string::npos : e;
}

// The raw text of the value of ``key`` in the top-level object ``s`` (a string keeps its quotes; a key
// given twice: the last, as Python's json). False when the key is absent or ``s`` is not one object.
inline bool topLevelValue(const std::string &s, const std::string &key, std::string &value) {
  size_t p = skipSpace(s, 0);
  if (p >= s.size() || s[p] != '{') return false;
  p = skipSpace(s, p + 1);
  bool found = false;
  if (p < s.size() && s[p] == '}') return false;  // {}
  while (p < s.size()) {
    if (s[p] != '"') return false;
    const size_t keyEnd = skipString(s, p);
    if (keyEnd == std::string::npos) return false;
    const bool match = s.compare(p + 1, keyEnd - p - 2, key) == 0;
    p = skipSpace(s, keyEnd);
    if (p >= s.size() || s[p] != ':') return false;
    p = skipSpace(s, p + 1);
    const size_t valueEnd = skipValue(s, p);
    if (valueEnd == std::string::npos) return false;
    if (match) {
      value.assign(s, p, valueEnd - p);
      found = true;
    }
    p = skipSpace(s, valueEnd);
    if (p < s.size() && s[p] == '}') return found && skipSpace(s, p + 1) == s.size();
    if (p >= s.size() || s[p] != ',') return false;
    p = skipSpace(s, p + 1);
  }
  return false;
}
}  // namespace json

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
  Model() : context_(0), precision_(kFloat32), version_(0), checksum_(0) {}
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
      if (precision_ == kInt16) {
        if (!r.i32(ten.frac) || !r.u32(ten.dtype) || (ten.dtype != 1 && ten.dtype != 2) || ten.frac < -32 ||
            ten.frac > 62)
          return Status::bad("tensor " + num(t) + ": bad int16 record");
        const size_t bytesPerValue = ten.dtype == 1 ? 2 : 4;
        if (!r.bytes(static_cast<size_t>(count) * bytesPerValue, p)) return Status::bad("truncated tensor data");
        ten.idata.resize(static_cast<size_t>(count));
        for (size_t i = 0; i < ten.idata.size(); ++i) {
          if (bytesPerValue == 2) {
            uint16_t u = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
            int16_t v;
            std::memcpy(&v, &u, 2);
            ten.idata[i] = v;
          } else {
            uint32_t u = static_cast<uint32_t>(p[4 * i]) | (static_cast<uint32_t>(p[4 * i + 1]) << 8) |
                         (static_cast<uint32_t>(p[4 * i + 2]) << 16) | (static_cast<uint32_t>(p[4 * i + 3]) << 24);
            std::memcpy(&ten.idata[i], &u, 4);
          }
        }
      } else {
        if (!r.bytes(static_cast<size_t>(count) * 4, p)) return Status::bad("truncated tensor data");
        ten.data.resize(static_cast<size_t>(count));
        for (size_t i = 0; i < ten.data.size(); ++i) {
          uint32_t u = static_cast<uint32_t>(p[4 * i]) | (static_cast<uint32_t>(p[4 * i + 1]) << 8) |
                       (static_cast<uint32_t>(p[4 * i + 2]) << 16) | (static_cast<uint32_t>(p[4 * i + 3]) << 24);
          std::memcpy(&ten.data[i], &u, 4);
        }
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
    version_ = version;
    checksum_ = stored;
    if (version == kLegacyVersion)
      return Status{true,
                    "warning: .cnnw version 1 has no checksum, so damage to its weights cannot be detected; "
                    "re-export it (codecnn export) to write version 2"};
    return Status::good();
  }

 public:
  // Concat and crop move samples only: one implementation for float and int16 buffers (runGraph checks
  // and sets the scales).
  template <typename T>
  static Status concatInto(const std::vector<Buf<T>> &vals, const Node &n, Buf<T> &out) {
    int c = 0;
    const Buf<T> &a0 = vals[n.inputs[0]];
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Buf<T> &a = vals[n.inputs[k]];
      if (a.h != a0.h || a.w != a0.w) return Status::bad("concat of different sizes");
      c += a.c;
    }
    out.reshape(c, a0.h, a0.w);
    size_t off = 0;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Buf<T> &a = vals[n.inputs[k]];
      std::copy(a.v.begin(), a.v.end(), out.v.begin() + off);
      off += a.v.size();
    }
    return Status::good();
  }

  template <typename T>
  static Status cropInto(const Buf<T> &a, int k, Buf<T> &out) {
    if (k < 0 || a.h <= 2 * k || a.w <= 2 * k) return Status::bad("crop larger than the tile");
    out.reshape(a.c, a.h - 2 * k, a.w - 2 * k);
    for (int ch = 0; ch < a.c; ++ch)
      for (int y = 0; y < out.h; ++y)
        std::copy(a.plane(ch) + static_cast<size_t>(y + k) * a.w + k,
                  a.plane(ch) + static_cast<size_t>(y + k) * a.w + k + out.w,
                  out.plane(ch) + static_cast<size_t>(y) * out.w);
    return Status::good();
  }

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

  // Runs the graph on one tile (1 x side x side, samples in [0, 1]); residual is (side - 2 context)^2.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual) const {
    std::vector<std::vector<float>> pool;
    return runTile(tile, side, qp, residual, pool);
  }

  // The same, recycling node buffers through ``pool`` (kept by the caller across tiles: no allocation, no
  // zero fill and no page faults after the first tile).
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual,
                 std::vector<std::vector<float>> &pool) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kFloat32) return Status::bad("runTile needs a float32 model; use runTileInt");
    std::vector<Buffer> vals(nodes_.size());
    Buffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side);
    std::copy(tile, tile + static_cast<size_t>(side) * side, in.v.begin());
    Status st = runGraph(vals, qp, pool);
    const Buffer &res = vals.back();
    const int s = side - 2 * context_;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) residual = res.v;
    release(vals, pool);
    return st;
  }

  // int16 models: runs one tile of integer samples (side x side) and writes the output samples
  // ((side - 2 context)^2, clipped to the bit depth), exactly as hm_bridge/fixed.py run_int_graph.
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples) const {
    std::vector<std::vector<int16_t>> pool;
    return runTileInt(samples, side, bitDepth, qp, outSamples, pool);
  }

  // The same, recycling node buffers through ``pool`` (as runTile).
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples,
                    std::vector<std::vector<int16_t>> &pool) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kInt16) return Status::bad("runTileInt needs an int16 model");
    if (bitDepth < 1 || bitDepth > 16) return Status::bad("bad bit depth");
    const int64_t peak = (static_cast<int64_t>(1) << bitDepth) - 1;
    std::vector<IBuffer> vals(nodes_.size());
    IBuffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side);
    in.q = outScale(nodes_[0]);
    for (size_t k = 0; k < in.v.size(); ++k)
      in.v[k] = sat16((static_cast<int64_t>(samples[k]) * (static_cast<int64_t>(1) << in.q) + peak / 2) / peak);
    Status st = runGraph(vals, qp, pool);
    const IBuffer &res = vals.back();
    const int c = context_, s = side - 2 * c, qin = in.q;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) {
      outSamples.resize(static_cast<size_t>(s) * s);
      for (int y = 0; y < s; ++y)
        for (int x = 0; x < s; ++x) {
          int64_t v = static_cast<int64_t>(in.v[static_cast<size_t>(y + c) * side + x + c]) +
                      shiftRound(res.v[static_cast<size_t>(y) * s + x], res.q - qin);
          int64_t o = floorShift(v * peak + (static_cast<int64_t>(1) << (qin - 1)), qin);
          outSamples[static_cast<size_t>(y) * s + x] = static_cast<int32_t>(o < 0 ? 0 : (o > peak ? peak : o));
        }
    }
    release(vals, pool);
    return st;
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
    const bool fixed = precision_ == kInt16;
    std::vector<Pel> out(static_cast<size_t>(width) * height);
    if (floatOut) floatOut->assign(static_cast<size_t>(width) * height, 0.f);
    std::vector<float> tile(fixed ? 0 : static_cast<size_t>(side) * side), res;
    std::vector<int32_t> itile(fixed ? static_cast<size_t>(side) * side : 0), ires;
    std::vector<std::vector<float>> pool;  // node buffers, recycled from tile to tile
    std::vector<std::vector<int16_t>> ipool;
    for (int y0 = 0; y0 < height; y0 += ctu) {
      for (int x0 = 0; x0 < width; x0 += ctu) {
        const int hh = std::min(ctu, height - y0), ww = std::min(ctu, width - x0);
        if (fixed) {
          fillTile(src, srcStride, width, height, x0, y0, side, &itile[0], SampleToInt());
          Status st = runTileInt(&itile[0], side, bitDepth, qp, ires, ipool);
          if (!st.ok) return st;
          for (int y = 0; y < hh; ++y)
            for (int x = 0; x < ww; ++x)
              out[static_cast<size_t>(y0 + y) * width + x0 + x] =
                  static_cast<Pel>(ires[static_cast<size_t>(y) * ctu + x]);
          continue;
        }
        fillTile(src, srcStride, width, height, x0, y0, side, &tile[0], SampleToFloat(peak));
        Status st = runTile(&tile[0], side, qp, res, pool);
        if (!st.ok) return st;
        for (int y = 0; y < hh; ++y) {
          for (int x = 0; x < ww; ++x) {
            float v = tile[static_cast<size_t>(y + c) * side + x + c] + res[static_cast<size_t>(y) * ctu + x];
            if (floatOut) (*floatOut)[static_cast<size_t>(y0 + y) * width + x0 + x] = v;
            v = std::min(std::max(v, 0.f), 1.f) * peak;
            out[static_cast<size_t>(y0 + y) * width + x0 + x] = static_cast<Pel>(std::nearbyint(v));
          }
        }
      }
    }
    for (int y = 0; y < height; ++y)
      std::copy(&out[static_cast<size_t>(y) * width], &out[static_cast<size_t>(y) * width] + width,
                dst + y * dstStride);
    return Status::good();
  }

 private:
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

  // The one tile fill of both paths: the CTU at (x0, y0) with its context border, side x side samples,
  // edge-replicated outside the picture (as codecnn.data.ctu.tile_plane and codecnn's datasets).
  template <typename Pel, typename T, typename Convert>
  void fillTile(const Pel *src, ptrdiff_t stride, int width, int height, int x0, int y0, int side, T *tile,
                Convert convert) const {
    for (int y = 0; y < side; ++y) {
      const Pel *row = src + std::min(std::max(y0 + y - context_, 0), height - 1) * stride;
      T *t = tile + static_cast<size_t>(y) * side;
      for (int x = 0; x < side; ++x) t[x] = convert(row[std::min(std::max(x0 + x - context_, 0), width - 1)]);
    }
  }

  // The output scale of a node: its last parameter in int16 models, 0 (unused) in float ones.
  int outScale(const Node &n) const { return precision_ == kInt16 ? n.params.back() : 0; }

  // A node buffer takes its storage from the pool when it has one.
  template <typename T>
  static void recycle(Buf<T> &b, std::vector<std::vector<T>> &pool) {
    if (pool.empty()) return;
    b.v.swap(pool.back());
    pool.pop_back();
  }

  template <typename T>
  static void toPool(Buf<T> &b, std::vector<std::vector<T>> &pool) {
    if (b.v.capacity() == 0) return;
    pool.push_back(std::vector<T>());
    pool.back().swap(b.v);
  }

  // Every buffer of a finished tile goes back to the pool.
  template <typename T>
  static void release(std::vector<Buf<T>> &vals, std::vector<std::vector<T>> &pool) {
    for (size_t i = 0; i < vals.size(); ++i) toPool(vals[i], pool);
  }

  // The per-type steps of runGraph, as overloads: the QP plane, add (out holds the first input, at scale
  // aq) and the convolution (conv, below).
  static void fillQp(Buffer &out, int qp) { std::fill(out.v.begin(), out.v.end(), static_cast<float>(qp) / 51.0f); }
  static void fillQp(IBuffer &out, int qp) {
    std::fill(out.v.begin(), out.v.end(),
              sat16((static_cast<int64_t>(qp) * (static_cast<int64_t>(1) << out.q) + 25) / 51));
  }
  static void addInto(Buffer &out, int, const Buffer &b) {
    for (size_t k = 0; k < out.v.size(); ++k) out.v[k] += b.v[k];
  }
  static void addInto(IBuffer &out, int aq, const IBuffer &b) {
    for (size_t k = 0; k < out.v.size(); ++k)
      out.v[k] = sat16(shiftRound(out.v[k], aq - out.q) + shiftRound(b.v[k], b.q - out.q));
  }

  // The graph on one tile, float or int16 (the one runner of runTile and runTileInt): vals[0] holds the
  // input tile; nodes take their buffers from ``pool`` and give back those no later node reads.
  template <typename T>
  Status runGraph(std::vector<Buf<T>> &vals, int qp, std::vector<std::vector<T>> &pool) const {
    for (size_t i = 1; i < nodes_.size(); ++i) {
      const Node &n = nodes_[i];
      const int qo = outScale(n);
      Buf<T> &out = vals[i];
      recycle(out, pool);
      if (n.op == OP_QP_PLANE) {
        const Buf<T> &a = vals[n.inputs[0]];
        out.reshape(1, a.h, a.w);
        out.q = qo;
        fillQp(out, qp);
      } else if (n.op == OP_CONCAT) {
        for (size_t k = 0; k < n.inputs.size(); ++k)
          if (vals[n.inputs[k]].q != qo) return Status::bad("concat of different scales");
        Status st = concatInto(vals, n, out);
        if (!st.ok) return st;
        out.q = qo;
      } else if (n.op == OP_CONV2D) {
        Status st = conv(n, vals[n.inputs[0]], out);
        if (!st.ok) return st;
      } else if (n.op == OP_RELU) {
        takeOrCopy(vals, n, i, out);
        for (size_t k = 0; k < out.v.size(); ++k) out.v[k] = out.v[k] > T(0) ? out.v[k] : T(0);
      } else if (n.op == OP_ADD) {
        const Buf<T> &a = vals[n.inputs[0]], &b = vals[n.inputs[1]];
        if (a.c != b.c || a.h != b.h || a.w != b.w) return Status::bad("add of different shapes");
        const int aq = a.q;
        takeOrCopy(vals, n, i, out);  // b stays valid: an input read twice is copied, not moved
        out.q = qo;
        addInto(out, aq, b);
      } else if (n.op == OP_CROP) {
        Status st = cropInto(vals[n.inputs[0]], n.params[0], out);
        if (!st.ok) return st;
        out.q = vals[n.inputs[0]].q;
      }
      for (size_t k = 0; k < n.inputs.size(); ++k)  // free what no later node reads (never the input tile)
        if (lastUse_[n.inputs[k]] == i && n.inputs[k] != 0) toPool(vals[n.inputs[k]], pool);
    }
    return Status::good();
  }

  static std::string num(uint64_t v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }

  // "0x" and 8 lower-case hex digits (Python's f"{v:#010x}").
  static std::string hex(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 15u];
    return s;
  }

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

  // The portable convolution loops, shared by float and int16: adds the taps of ``cin`` input planes
  // (``in``, each ih x iw) to the accumulator plane ``d`` (oh x ow). int16 accumulates in uint32 with
  // wrap-around (defined, order-independent), so any loop order gives the same bits.
  static inline float product(float w, float s) { return w * s; }
  static inline uint32_t product(int32_t w, int16_t s) { return static_cast<uint32_t>(w * static_cast<int32_t>(s)); }

  template <typename Sample, typename Weight, typename Acc>
  static void accumulateConv(const Sample *in, int ih, int iw, const Weight *wco, int cin, int k, int pad, Acc *d,
                             int oh, int ow) {
    const size_t plane = static_cast<size_t>(ih) * iw, kk = static_cast<size_t>(k) * k;
    int ci = 0;
    for (; ci + 4 <= cin; ci += 4) {  // four input channels per pass over the output plane
      const Sample *p0 = in + ci * plane, *p1 = p0 + plane, *p2 = p1 + plane, *p3 = p2 + plane;
      for (int ky = 0; ky < k; ++ky) {
        for (int kx = 0; kx < k; ++kx) {
          const size_t tap = static_cast<size_t>(ky) * k + kx;
          const Weight w0 = wco[ci * kk + tap], w1 = wco[(ci + 1) * kk + tap];
          const Weight w2 = wco[(ci + 2) * kk + tap], w3 = wco[(ci + 3) * kk + tap];
          const int dy = ky - pad, dx = kx - pad;
          const int x_lo = std::max(0, -dx), x_hi = std::min(ow, iw - dx);
          for (int y = std::max(0, -dy); y < std::min(oh, ih - dy); ++y) {
            const size_t off = static_cast<size_t>(y + dy) * iw + dx;
            const Sample *s0 = p0 + off, *s1 = p1 + off, *s2 = p2 + off, *s3 = p3 + off;
            Acc *dr = d + static_cast<size_t>(y) * ow;
            for (int x = x_lo; x < x_hi; ++x)
              dr[x] += product(w0, s0[x]) + product(w1, s1[x]) + product(w2, s2[x]) + product(w3, s3[x]);
          }
        }
      }
    }
    for (; ci < cin; ++ci) {
      const Sample *src = in + ci * plane;
      for (int ky = 0; ky < k; ++ky) {
        for (int kx = 0; kx < k; ++kx) {
          const Weight wv = wco[(static_cast<size_t>(ci) * k + ky) * k + kx];
          const int dy = ky - pad, dx = kx - pad;
          const int x_lo = std::max(0, -dx), x_hi = std::min(ow, iw - dx);
          for (int y = std::max(0, -dy); y < std::min(oh, ih - dy); ++y) {
            const Sample *sr = src + static_cast<size_t>(y + dy) * iw + dx;
            Acc *dr = d + static_cast<size_t>(y) * ow;
            for (int x = x_lo; x < x_hi; ++x) dr[x] += product(wv, sr[x]);
          }
        }
      }
    }
  }

  Status conv(const Node &n, const Buffer &in, Buffer &out) const {
    const Tensor &W = tensors_[n.params[0]], &B = tensors_[n.params[1]];
    const int pad = n.params[2], groups = n.params[3];
    const int cout = static_cast<int>(W.dims[0]), cin_g = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
    const int oh = in.h + 2 * pad - k + 1, ow = in.w + 2 * pad - k + 1;
    if (oh <= 0 || ow <= 0) return Status::bad("convolution larger than the tile");
    out.reshape(cout, oh, ow);
#ifdef CNNW_AVX2
    if (groups == 1) {
      if (k == 1 && pad == 0 && cout % 16 == 0) {
        conv1x1Avx2(&in.v[0], in.c, in.h * in.w, &W.data[0], &B.data[0], cout, out);
      } else if (cout % 16 == 0) {
        if (k == 3)
          convAvx2Co<3>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
        else if (k == 1)
          convAvx2Co<1>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
        else
          convAvx2Co<0>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
      } else if (k == 3)
        convAvx2<3>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
      else if (k == 1)
        convAvx2<1>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
      else
        convAvx2<0>(&in.v[0], in.c, in.h, in.w, pad, &W.data[0], &B.data[0], cout, k, out);
      return Status::good();
    }
#endif
    const int cout_g = cout / groups;
    for (int co = 0; co < cout; ++co) {
      float *o = out.plane(co);
      std::fill(o, o + static_cast<size_t>(oh) * ow, B.data[co]);
      const int g = co / cout_g;
      accumulateConv(in.plane(g * cin_g), in.h, in.w, &W.data[static_cast<size_t>(co) * cin_g * k * k], cin_g, k, pad,
                     o, oh, ow);
    }
    return Status::good();
  }

#ifdef CNNW_AVX2
  // The float input of a convolution, zero-padded, laid out [y][c][x] (rows of pw samples): the k rows of
  // all channels that one output row reads are contiguous. Returns the stride of y. Only the border is
  // zeroed (the buffer is reused between calls).
  static size_t padRows(const float *in, int cin, int ih, int iw, int pad, int ph, int pw, std::vector<float> &padded) {
    const size_t prow = static_cast<size_t>(cin) * pw;
    padded.resize(prow * ph);
    std::fill(padded.begin(), padded.begin() + prow * pad, 0.f);
    std::fill(padded.begin() + prow * (pad + ih), padded.end(), 0.f);
    for (int y = 0; y < ih; ++y)
      for (int c = 0; c < cin; ++c) {
        float *r = &padded[prow * (y + pad) + static_cast<size_t>(c) * pw];
        const float *src = in + (static_cast<size_t>(c) * ih + y) * iw;
        std::fill(r, r + pad, 0.f);
        std::copy(src, src + iw, r + pad);
        std::fill(r + pad + iw, r + pw, 0.f);
      }
    return prow;
  }

  // Direct convolution, register-blocked: 4 output channels x 24 (or 8) pixels of one output row stay in
  // 12 (or 4) AVX registers through all input channels and taps. Rows outermost, so the k input rows of
  // every channel stay in cache for all output channels. The input is copied once, zero-padded, so the
  // inner loop has no bounds; weights are repacked per block of 4 output channels as [ci][ky][kx][4], read in sequence.
  // Scratch memory is kept per thread between calls. K: the kernel size when known at compile time (3 and 1: the taps
  // unroll), 0 for any.
  template <int K>
  static void convAvx2(const float *in, int cin, int ih, int iw, int pad, const float *w, const float *bias, int cout,
                       int kr, Buffer &out) {
    const int k = K ? K : kr;
    const int oh = out.h, ow = out.w, owr = (ow + 7) / 8 * 8, coutp = (cout + 3) / 4 * 4;
    const int ph = oh + k - 1, pw = owr + k - 1 + 8;
    static thread_local std::vector<float> padded, wp, rowbuf;
    const size_t prow = padRows(in, cin, ih, iw, pad, ph, pw, padded);
    const int taps = cin * k * k;
    wp.assign(static_cast<size_t>(taps) * coutp, 0.f);  // [co / 4][ci][ky][kx][co % 4]
    for (int co = 0; co < cout; ++co)
      for (int t = 0; t < taps; ++t)
        wp[(static_cast<size_t>(co / 4) * taps + t) * 4 + co % 4] = w[static_cast<size_t>(co) * taps + t];
    rowbuf.resize(static_cast<size_t>(coutp) * owr);
    for (int y = 0; y < oh; ++y) {
      const float *base = &padded[prow * y];
      for (int co0 = 0; co0 < cout; co0 += 4) {
        const float *wblk = &wp[static_cast<size_t>(co0) * taps];
        float b[4] = {0.f, 0.f, 0.f, 0.f};
        for (int j = 0; j < 4 && co0 + j < cout; ++j) b[j] = bias[co0 + j];
        float *rb = &rowbuf[static_cast<size_t>(co0) * owr];
        int x = 0;
        for (; x + 16 <= owr; x += 16) {
          __m256 a00 = _mm256_set1_ps(b[0]), a01 = a00, a10 = _mm256_set1_ps(b[1]), a11 = a10;
          __m256 a20 = _mm256_set1_ps(b[2]), a21 = a20, a30 = _mm256_set1_ps(b[3]), a31 = a30;
          const float *wt = wblk;
          for (int c = 0; c < cin; ++c)
            for (int ky = 0; ky < k; ++ky) {
              const float *row = base + static_cast<size_t>(ky) * prow + static_cast<size_t>(c) * pw + x;
              for (int kx = 0; kx < k; ++kx, wt += 4) {
                const __m256 s0 = _mm256_loadu_ps(row + kx), s1 = _mm256_loadu_ps(row + kx + 8);
                __m256 wv = _mm256_broadcast_ss(wt);
                a00 = _mm256_fmadd_ps(wv, s0, a00);
                a01 = _mm256_fmadd_ps(wv, s1, a01);
                wv = _mm256_broadcast_ss(wt + 1);
                a10 = _mm256_fmadd_ps(wv, s0, a10);
                a11 = _mm256_fmadd_ps(wv, s1, a11);
                wv = _mm256_broadcast_ss(wt + 2);
                a20 = _mm256_fmadd_ps(wv, s0, a20);
                a21 = _mm256_fmadd_ps(wv, s1, a21);
                wv = _mm256_broadcast_ss(wt + 3);
                a30 = _mm256_fmadd_ps(wv, s0, a30);
                a31 = _mm256_fmadd_ps(wv, s1, a31);
              }
            }
          float *r0 = rb + x, *r1 = r0 + owr, *r2 = r1 + owr, *r3 = r2 + owr;
          _mm256_storeu_ps(r0, a00), _mm256_storeu_ps(r0 + 8, a01), _mm256_storeu_ps(r1, a10);
          _mm256_storeu_ps(r1 + 8, a11), _mm256_storeu_ps(r2, a20), _mm256_storeu_ps(r2 + 8, a21);
          _mm256_storeu_ps(r3, a30), _mm256_storeu_ps(r3 + 8, a31);
        }
        for (; x < owr; x += 8) {
          __m256 a[4];
          for (int j = 0; j < 4; ++j) a[j] = _mm256_set1_ps(b[j]);
          const float *wt = wblk;
          for (int c = 0; c < cin; ++c)
            for (int ky = 0; ky < k; ++ky) {
              const float *row = base + static_cast<size_t>(ky) * prow + static_cast<size_t>(c) * pw + x;
              for (int kx = 0; kx < k; ++kx, wt += 4) {
                const __m256 s0 = _mm256_loadu_ps(row + kx);
                for (int j = 0; j < 4; ++j) a[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(wt + j), s0, a[j]);
              }
            }
          for (int j = 0; j < 4; ++j) _mm256_storeu_ps(rb + static_cast<size_t>(j) * owr + x, a[j]);
        }
      }
      for (int co = 0; co < cout; ++co)
        std::copy(&rowbuf[static_cast<size_t>(co) * owr], &rowbuf[static_cast<size_t>(co) * owr] + ow,
                  out.plane(co) + static_cast<size_t>(y) * ow);
    }
  }

  // 1x1 convolutions with 16, 32, ... output channels are a matrix product over the pixels, which are
  // contiguous in the planar input: no padded copy. Vectorised over output channels (two registers of 8),
  // 6 pixels at a time, inputs broadcast; pixels go in chunks of 96 whose input stays in cache.
  static void conv1x1Avx2(const float *in, int cin, int npix, const float *w, const float *bias, int cout,
                          Buffer &out) {
    static thread_local std::vector<float> wbuf;
    const int P = 6, chunk = 96;
    wbuf.resize(static_cast<size_t>(cin) * cout + 8);  // [co / 16][ci][16], 32-byte aligned
    float *wq = &wbuf[0];
    while (reinterpret_cast<uintptr_t>(wq) % 32) ++wq;
    for (int co = 0; co < cout; ++co)
      for (int c = 0; c < cin; ++c)
        wq[(static_cast<size_t>(co / 16) * cin + c) * 16 + co % 16] = w[static_cast<size_t>(co) * cin + c];
    const size_t np = static_cast<size_t>(npix);
    float tmp[P * 16];
    for (int p0 = 0; p0 < npix; p0 += chunk) {
      const int pn = std::min(chunk, npix - p0);
      for (int cb = 0; cb < cout; cb += 16) {
        const __m256 b0 = _mm256_loadu_ps(bias + cb), b1 = _mm256_loadu_ps(bias + cb + 8);
        const float *wblk = wq + static_cast<size_t>(cb / 16) * cin * 16;
        int p = 0;
        for (; p + P <= pn; p += P) {
          __m256 a00 = b0, a01 = b1, a10 = b0, a11 = b1, a20 = b0, a21 = b1;
          __m256 a30 = b0, a31 = b1, a40 = b0, a41 = b1, a50 = b0, a51 = b1;
          const float *src = in + p0 + p;
          for (int c = 0; c < cin; ++c, src += np) {
            const __m256 w0 = _mm256_load_ps(wblk + 16 * c), w1 = _mm256_load_ps(wblk + 16 * c + 8);
            __m256 sv = _mm256_broadcast_ss(src);
            a00 = _mm256_fmadd_ps(sv, w0, a00), a01 = _mm256_fmadd_ps(sv, w1, a01);
            sv = _mm256_broadcast_ss(src + 1);
            a10 = _mm256_fmadd_ps(sv, w0, a10), a11 = _mm256_fmadd_ps(sv, w1, a11);
            sv = _mm256_broadcast_ss(src + 2);
            a20 = _mm256_fmadd_ps(sv, w0, a20), a21 = _mm256_fmadd_ps(sv, w1, a21);
            sv = _mm256_broadcast_ss(src + 3);
            a30 = _mm256_fmadd_ps(sv, w0, a30), a31 = _mm256_fmadd_ps(sv, w1, a31);
            sv = _mm256_broadcast_ss(src + 4);
            a40 = _mm256_fmadd_ps(sv, w0, a40), a41 = _mm256_fmadd_ps(sv, w1, a41);
            sv = _mm256_broadcast_ss(src + 5);
            a50 = _mm256_fmadd_ps(sv, w0, a50), a51 = _mm256_fmadd_ps(sv, w1, a51);
          }
          _mm256_storeu_ps(tmp, a00), _mm256_storeu_ps(tmp + 8, a01), _mm256_storeu_ps(tmp + 16, a10);
          _mm256_storeu_ps(tmp + 24, a11), _mm256_storeu_ps(tmp + 32, a20), _mm256_storeu_ps(tmp + 40, a21);
          _mm256_storeu_ps(tmp + 48, a30), _mm256_storeu_ps(tmp + 56, a31), _mm256_storeu_ps(tmp + 64, a40);
          _mm256_storeu_ps(tmp + 72, a41), _mm256_storeu_ps(tmp + 80, a50), _mm256_storeu_ps(tmp + 88, a51);
          for (int co = 0; co < 16; ++co) {
            float *o = out.plane(cb + co) + p0 + p;
            for (int i = 0; i < P; ++i) o[i] = tmp[16 * i + co];
          }
        }
        for (; p < pn; ++p)  // the chunk's last pixels, one at a time
          for (int co = 0; co < 16; ++co) {
            float acc = bias[cb + co];
            for (int c = 0; c < cin; ++c) acc += wblk[16 * c + co] * in[static_cast<size_t>(c) * np + p0 + p];
            out.plane(cb + co)[p0 + p] = acc;
          }
      }
    }
  }

  // For 16, 32, ... output channels: vectorised over output channels instead (two registers of 8), 6
  // pixels of a row at a time, 12 accumulators. Inputs are broadcast (4-byte loads never straddle a cache
  // line, unlike the pixel-vector loads at odd offsets above) and weights load as aligned vectors.
  template <int K>
  static void convAvx2Co(const float *in, int cin, int ih, int iw, int pad, const float *w, const float *bias, int cout,
                         int kr, Buffer &out) {
    const int k = K ? K : kr, P = 6;
    const int oh = out.h, ow = out.w, owr = (ow + P - 1) / P * P;
    const int ph = oh + k - 1, pw = owr + k - 1;
    static thread_local std::vector<float> padded, wbuf, rowbuf;
    const size_t prow = padRows(in, cin, ih, iw, pad, ph, pw, padded);
    const int taps = cin * k * k;
    wbuf.resize(static_cast<size_t>(taps) * cout + 8);  // [co / 16][ci][ky][kx][16], 32-byte aligned
    float *wq = &wbuf[0];
    while (reinterpret_cast<uintptr_t>(wq) % 32) ++wq;
    for (int co = 0; co < cout; ++co)
      for (int t = 0; t < taps; ++t)
        wq[(static_cast<size_t>(co / 16) * taps + t) * 16 + co % 16] = w[static_cast<size_t>(co) * taps + t];
    rowbuf.resize(static_cast<size_t>(owr) * cout);  // [x][co]
    for (int y = 0; y < oh; ++y) {
      const float *base = &padded[prow * y];
      for (int cb = 0; cb < cout; cb += 16) {
        const __m256 b0 = _mm256_loadu_ps(bias + cb), b1 = _mm256_loadu_ps(bias + cb + 8);
        for (int x = 0; x < owr; x += P) {
          __m256 a00 = b0, a01 = b1, a10 = b0, a11 = b1, a20 = b0, a21 = b1;
          __m256 a30 = b0, a31 = b1, a40 = b0, a41 = b1, a50 = b0, a51 = b1;
          const float *wt = wq + static_cast<size_t>(cb / 16) * taps * 16;
          for (int c = 0; c < cin; ++c)
            for (int ky = 0; ky < k; ++ky) {
              const float *row = base + static_cast<size_t>(ky) * prow + static_cast<size_t>(c) * pw + x;
              for (int kx = 0; kx < k; ++kx, wt += 16) {
                const __m256 w0 = _mm256_load_ps(wt), w1 = _mm256_load_ps(wt + 8);
                __m256 sv = _mm256_broadcast_ss(row + kx);
                a00 = _mm256_fmadd_ps(sv, w0, a00), a01 = _mm256_fmadd_ps(sv, w1, a01);
                sv = _mm256_broadcast_ss(row + kx + 1);
                a10 = _mm256_fmadd_ps(sv, w0, a10), a11 = _mm256_fmadd_ps(sv, w1, a11);
                sv = _mm256_broadcast_ss(row + kx + 2);
                a20 = _mm256_fmadd_ps(sv, w0, a20), a21 = _mm256_fmadd_ps(sv, w1, a21);
                sv = _mm256_broadcast_ss(row + kx + 3);
                a30 = _mm256_fmadd_ps(sv, w0, a30), a31 = _mm256_fmadd_ps(sv, w1, a31);
                sv = _mm256_broadcast_ss(row + kx + 4);
                a40 = _mm256_fmadd_ps(sv, w0, a40), a41 = _mm256_fmadd_ps(sv, w1, a41);
                sv = _mm256_broadcast_ss(row + kx + 5);
                a50 = _mm256_fmadd_ps(sv, w0, a50), a51 = _mm256_fmadd_ps(sv, w1, a51);
              }
            }
          float *r = &rowbuf[static_cast<size_t>(x) * cout + cb];
          const size_t st = static_cast<size_t>(cout);
          _mm256_storeu_ps(r, a00), _mm256_storeu_ps(r + 8, a01), _mm256_storeu_ps(r + st, a10);
          _mm256_storeu_ps(r + st + 8, a11), _mm256_storeu_ps(r + 2 * st, a20), _mm256_storeu_ps(r + 2 * st + 8, a21);
          _mm256_storeu_ps(r + 3 * st, a30), _mm256_storeu_ps(r + 3 * st + 8, a31);
          _mm256_storeu_ps(r + 4 * st, a40), _mm256_storeu_ps(r + 4 * st + 8, a41);
          _mm256_storeu_ps(r + 5 * st, a50), _mm256_storeu_ps(r + 5 * st + 8, a51);
        }
      }
      for (int co = 0; co < cout; ++co) {
        float *o = out.plane(co) + static_cast<size_t>(y) * ow;
        for (int x = 0; x < ow; ++x) o[x] = rowbuf[static_cast<size_t>(x) * cout + co];
      }
    }
  }

  // The int16 convolution with AVX2 _mm256_madd_epi16: input channels in pairs, interleaved per pixel
  // (zero-padded, an odd count padded with a zero channel), so one instruction forms w0 s0 + w1 s1 for 8
  // pixels; 4 output channels x 24 pixels accumulate in 12 registers. All int32 arithmetic wraps modulo
  // 2^32 (madd included: its one overflow case, 2 x (-32768)^2, wraps the same way), so the result equals
  // the portable loop's exactly.
  template <int K>
  static void convIntAvx2(const IBuffer &in, int pad, const int32_t *w, const int32_t *bias, int cout, int kr,
                          int shift, IBuffer &out) {
    const int k = K ? K : kr;
    const int cin = in.c, ih = in.h, iw = in.w, oh = out.h, ow = out.w, owr = (ow + 7) / 8 * 8;
    const int pairs = (cin + 1) / 2, coutp = (cout + 3) / 4 * 4, ph = oh + k - 1, pw = owr + k - 1 + 8;
    static thread_local std::vector<int16_t> padded;
    static thread_local std::vector<int32_t> wp, rowbuf;
    const size_t prow = static_cast<size_t>(pairs) * pw * 2;  // laid out [y][pair][x][2]
    padded.assign(prow * ph, 0);
    for (int c = 0; c < cin; ++c) {
      const int16_t *src = in.plane(c);
      for (int y = 0; y < ih; ++y) {
        int16_t *dst = &padded[prow * (y + pad) + (static_cast<size_t>(c / 2) * pw + pad) * 2 + c % 2];
        for (int x = 0; x < iw; ++x) dst[2 * x] = src[static_cast<size_t>(y) * iw + x];
      }
    }
    const int kk = k * k, taps = pairs * kk;  // weights: [co / 4][pair][ky][kx][co % 4] as (w0, w1) int16 pairs
    wp.assign(static_cast<size_t>(taps) * coutp, 0);
    for (int co = 0; co < cout; ++co)
      for (int c = 0; c < cin; ++c)
        for (int t = 0; t < kk; ++t) {
          int32_t &slot = wp[(static_cast<size_t>(co / 4) * taps + static_cast<size_t>(c / 2) * kk + t) * 4 + co % 4];
          const uint32_t v =
              static_cast<uint16_t>(static_cast<int16_t>(w[(static_cast<size_t>(co) * cin + c) * kk + t]));
          slot = static_cast<int32_t>(static_cast<uint32_t>(slot) | (c % 2 ? v << 16 : v));
        }
    rowbuf.resize(static_cast<size_t>(coutp) * owr);
    for (int y = 0; y < oh; ++y) {
      const int16_t *base = &padded[prow * y];
      for (int co0 = 0; co0 < cout; co0 += 4) {
        const int32_t *wblk = &wp[static_cast<size_t>(co0) * taps];
        int32_t b[4] = {0, 0, 0, 0};
        for (int j = 0; j < 4 && co0 + j < cout; ++j) b[j] = bias[co0 + j];
        int32_t *rb = &rowbuf[static_cast<size_t>(co0) * owr];
        int x = 0;
        for (; x + 24 <= owr; x += 24) {
          __m256i a[4][3];
          for (int j = 0; j < 4; ++j) a[j][0] = a[j][1] = a[j][2] = _mm256_set1_epi32(b[j]);
          const int32_t *wt = wblk;
          for (int c = 0; c < pairs; ++c)
            for (int ky = 0; ky < k; ++ky) {
              const int16_t *row = base + static_cast<size_t>(ky) * prow + (static_cast<size_t>(c) * pw + x) * 2;
              for (int kx = 0; kx < k; ++kx, wt += 4) {
                const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * kx));
                const __m256i s1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * kx + 16));
                const __m256i s2 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * kx + 32));
                for (int j = 0; j < 4; ++j) {
                  const __m256i wv = _mm256_set1_epi32(wt[j]);
                  a[j][0] = _mm256_add_epi32(a[j][0], _mm256_madd_epi16(s0, wv));
                  a[j][1] = _mm256_add_epi32(a[j][1], _mm256_madd_epi16(s1, wv));
                  a[j][2] = _mm256_add_epi32(a[j][2], _mm256_madd_epi16(s2, wv));
                }
              }
            }
          for (int j = 0; j < 4; ++j)
            for (int v = 0; v < 3; ++v)
              _mm256_storeu_si256(reinterpret_cast<__m256i *>(rb + static_cast<size_t>(j) * owr + x + 8 * v), a[j][v]);
        }
        for (; x < owr; x += 8) {
          __m256i a[4];
          for (int j = 0; j < 4; ++j) a[j] = _mm256_set1_epi32(b[j]);
          const int32_t *wt = wblk;
          for (int c = 0; c < pairs; ++c)
            for (int ky = 0; ky < k; ++ky) {
              const int16_t *row = base + static_cast<size_t>(ky) * prow + (static_cast<size_t>(c) * pw + x) * 2;
              for (int kx = 0; kx < k; ++kx, wt += 4) {
                const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * kx));
                for (int j = 0; j < 4; ++j)
                  a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(s0, _mm256_set1_epi32(wt[j])));
              }
            }
          for (int j = 0; j < 4; ++j)
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(rb + static_cast<size_t>(j) * owr + x), a[j]);
        }
      }
      for (int co = 0; co < cout; ++co) {
        const int32_t *r = &rowbuf[static_cast<size_t>(co) * owr];
        int16_t *o = out.plane(co) + static_cast<size_t>(y) * ow;
        for (int x = 0; x < ow; ++x) o[x] = sat16(shiftRound(r[x], shift));
      }
    }
  }
#endif

  // int32 accumulation with two's-complement wrap (unsigned arithmetic: defined, order-independent).
  Status conv(const Node &n, const IBuffer &in, IBuffer &out) const {
    const Tensor &W = tensors_[n.params[0]], &B = tensors_[n.params[1]];
    const int pad = n.params[2], groups = n.params[3], qo = n.params.back();
    const int cout = static_cast<int>(W.dims[0]), cin_g = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
    const int oh = in.h + 2 * pad - k + 1, ow = in.w + 2 * pad - k + 1;
    if (oh <= 0 || ow <= 0) return Status::bad("convolution larger than the tile");
    out.reshape(cout, oh, ow);
    out.q = qo;
    const int cout_g = cout / groups, shift = W.frac + in.q - qo;
#ifdef CNNW_AVX2
    if (groups == 1) {
      if (k == 3)
        convIntAvx2<3>(in, pad, &W.idata[0], &B.idata[0], cout, k, shift, out);
      else if (k == 1)
        convIntAvx2<1>(in, pad, &W.idata[0], &B.idata[0], cout, k, shift, out);
      else
        convIntAvx2<0>(in, pad, &W.idata[0], &B.idata[0], cout, k, shift, out);
      return Status::good();
    }
#endif
    std::vector<uint32_t> acc(static_cast<size_t>(oh) * ow);
    for (int co = 0; co < cout; ++co) {
      std::fill(acc.begin(), acc.end(), static_cast<uint32_t>(B.idata[co]));
      const int g = co / cout_g;
      accumulateConv(in.plane(g * cin_g), in.h, in.w, &W.idata[static_cast<size_t>(co) * cin_g * k * k], cin_g, k, pad,
                     &acc[0], oh, ow);
      int16_t *o = out.plane(co);
      for (size_t j = 0; j < acc.size(); ++j) {
        int32_t a;
        std::memcpy(&a, &acc[j], 4);
        o[j] = sat16(shiftRound(a, shift));
      }
    }
    return Status::good();
  }

  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
  std::vector<size_t> lastUse_;
  std::string header_;
  int context_;
  uint32_t precision_;
  uint32_t version_;   // of the loaded file (0: none loaded)
  uint32_t checksum_;  // its CRC-32 (version 2), else 0
};

}  // namespace cnnw

#endif  // CNNW_H
