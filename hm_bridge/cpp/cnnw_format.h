// cnnw_format.h -- the .cnnw container as both readers share it: constants, the op enum, the load Status,
// tensors, the CRC-32, the JSON header reader and the byte reader. Included by cnnw.h (the restoration
// network, RDN) and cnnw_modenet.h (the mode network); the format is specified in hm_bridge/format.py (keep
// the op enum and the field order in step with it).
#ifndef CNNW_FORMAT_H
#define CNNW_FORMAT_H

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace cnnw {

static const uint32_t kVersion = 2;        // written by hm_bridge/format.py; has the checksum
static const uint32_t kModesVersion = 3;   // version 2's layout holding a mode network (ops 7-11)
static const uint32_t kLegacyVersion = 1;  // still read, with a warning: no checksum
static const size_t kCheckedFrom = 12;     // the CRC-32 (at offset 8) covers the bytes from here to the end
static const uint32_t kFloat32 = 0, kInt16 = 1;
static const uint32_t kMaxDims = 4, kMaxNodes = 1u << 16, kMaxHeader = 1u << 20, kMaxParams = 64;
static const uint64_t kMaxTensorValues = 1ull << 26;

// Mirrors hm_bridge/format.py (INPUT, QP_PLANE, CONCAT, CONV2D, RELU, ADD, CROP; the mode network's NORMALISE,
// AVG_POOL, SPP_MAX, DENSE, HEADS, in version 3 files only).
enum Op : uint32_t {
  OP_INPUT = 0,
  OP_QP_PLANE = 1,
  OP_CONCAT = 2,
  OP_CONV2D = 3,
  OP_RELU = 4,
  OP_ADD = 5,
  OP_CROP = 6,
  OP_NORMALISE = 7,
  OP_AVG_POOL = 8,
  OP_SPP_MAX = 9,
  OP_DENSE = 10,
  OP_HEADS = 11,
  OP_COUNT = 12
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

// A node of the graph (channels and plan: filled by cnnw.h at load time).
struct Node {
  uint32_t op;
  std::vector<uint32_t> inputs;
  std::vector<int32_t> params;
  uint32_t channels;  // inferred at load time
  int plan;           // convolutions: index of the packed weights of the vector path, or -1
  Node() : op(0), channels(0), plan(-1) {}
};

// Integer helpers of hm_bridge/fixed.py (int16 models, both networks): floor shift, round-half-up rescale,
// int16 saturation.
inline int64_t floorShift(int64_t v, int s) { return v >= 0 ? (v >> s) : -((-v - 1) >> s) - 1; }
inline int64_t shiftRound(int64_t v, int s) {
  return s > 0 ? floorShift(v + (static_cast<int64_t>(1) << (s - 1)), s) : v * (static_cast<int64_t>(1) << (-s));
}
inline int16_t sat16(int64_t v) { return static_cast<int16_t>(v < -32768 ? -32768 : (v > 32767 ? 32767 : v)); }

// Decimal text of a count (messages).
inline std::string decimal(uint64_t v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// "0x" and 8 lower-case hex digits (Python's f"{v:#010x}").
inline std::string hex32(uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s += digits[(v >> shift) & 15u];
  return s;
}

// Reads tensor ``t`` (its rank, dimensions and values, float32 or an int16 record) at the reader's position.
inline Status readTensor(Reader &r, uint32_t precision, uint32_t t, Tensor &ten) {
  uint32_t nd;
  if (!r.u32(nd) || nd < 1 || nd > kMaxDims) return Status::bad("tensor " + decimal(t) + ": bad rank");
  uint64_t count = 1;
  for (uint32_t k = 0; k < nd; ++k) {
    uint32_t d;
    if (!r.u32(d)) return Status::bad("truncated tensor dims");
    count *= d;
    if (count > kMaxTensorValues) return Status::bad("tensor " + decimal(t) + " is too large");
    ten.dims.push_back(d);
  }
  const uint8_t *p;
  if (precision == kInt16) {
    if (!r.i32(ten.frac) || !r.u32(ten.dtype) || (ten.dtype != 1 && ten.dtype != 2) || ten.frac < -32 || ten.frac > 62)
      return Status::bad("tensor " + decimal(t) + ": bad int16 record");
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
  return Status::good();
}

}  // namespace cnnw

#endif  // CNNW_FORMAT_H
