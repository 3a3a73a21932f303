// codecnn_signal.h -- what the encoder decides for each picture and signals in the bitstream, and how the
// decoder follows it: per picture on/off, a residual scale fitted at the encoder, and per-CTU on/off, decided
// with the rate counted (distortion + lambda x bits). Header-only, no HM types (codecnn_hm.h is the glue).
//
// The payload travels in the first slice segment header of each picture, as HEVC's
// slice_segment_header_extension_data_byte (H.265 7.3.6.1; the PPS's slice_segment_header_extension_present_flag
// is set when the encoder runs a model). Every decoder skips those bytes; HM counts them in the slice's bits,
// so the rate HM reports includes the signalling. Layout (version 1):
//
//   header  (on the first picture and on every IRAP picture whose POC is a multiple of 32; 4 bytes)
//     0x00                    marks a header (a picture's parameters never start with 0x00 or 0x80)
//     0x10 | mode             version 1 in the high nibble; mode 0 always on (no parameters follow on any
//                             picture: every picture is filtered), 1 per picture, 2 per picture and per CTU
//     model id (2 bytes)      the low 16 bits of the model file's CRC-32, big-endian (0 for a file without)
//   parameters (modes 1 and 2; absent: the filter is off on this picture)
//     byte 0                  bit 7: CTU flags follow; bits 6..0: the scale k, 1..127 (scale k / 64)
//     flags (bit 7 set)       one bit per CTU of the SPS's CTU size in raster order, most significant bit
//                             first, zero-padded to a whole byte; 1 = filtered
//
// A filtered sample is clip(x + ((k * (f - x) + 32) >> 6)), x the picture after SAO, f the network's output
// (k = 64 gives f itself); the shift is a floor on negative values too. Encoder and decoder compute it
// alike, so the decoder's picture equals the encoder's (HM's MD5 SEI checks it).
#ifndef CODECNN_SIGNAL_H
#define CODECNN_SIGNAL_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace codecnn_signal {

static const int kVersion = 1;
static const int kScaleShift = 6;  // scale = k / 64
static const int kMaxScale = 127;
static const size_t kHeaderBytes = 4;
enum Mode { kAlwaysOn = 0, kPerPicture = 1, kPerCtu = 2 };

inline int modelId(uint32_t crc) { return static_cast<int>(crc & 0xffffu); }

// Whether the encoder writes a header on this picture (the decoder only needs one before the first
// picture it decodes; every 32nd IRAP repeats it for a decoder that starts at a random access point).
inline bool headerDue(bool firstPicture, bool irap, int poc) { return firstPicture || (irap && poc % 32 == 0); }

inline void appendHeader(std::vector<unsigned char> &out, int mode, int id) {
  out.push_back(0x00);
  out.push_back(static_cast<unsigned char>((kVersion << 4) | mode));
  out.push_back(static_cast<unsigned char>((id >> 8) & 0xff));
  out.push_back(static_cast<unsigned char>(id & 0xff));
}

// Bits of ue(v) for value v (the extension length's code).
inline int ueBits(unsigned v) {
  int n = 0;
  for (unsigned x = v + 1; x > 1; x >>= 1) ++n;
  return 2 * n + 1;
}

inline int blocksAcross(int size, int block) { return (size + block - 1) / block; }

// The scaled residual of one sample: clip(x + floor((k * (f - x) + 32) / 64)) to [0, peak].
inline int blend(int x, int f, int k, int peak) {
  const int64_t num = static_cast<int64_t>(k) * (f - x) + (1 << (kScaleShift - 1));
  const int64_t d = num >= 0 ? num >> kScaleShift : -((-num + (1 << kScaleShift) - 1) >> kScaleShift);  // floor
  const int64_t v = x + d;
  return static_cast<int>(v < 0 ? 0 : (v > peak ? peak : v));
}

// What the encoder chose for one picture.
struct Choice {
  bool on;
  int scale;                       // k, 1..127
  std::vector<unsigned char> ctu;  // per-CTU flags (empty: every CTU on)
  Choice() : on(false), scale(0) {}
};

inline void appendParameters(std::vector<unsigned char> &out, const Choice &c) {
  if (!c.on) return;
  out.push_back(static_cast<unsigned char>((c.ctu.empty() ? 0 : 0x80) | c.scale));
  const size_t start = out.size();
  out.resize(start + (c.ctu.size() + 7) / 8, 0);
  for (size_t b = 0; b < c.ctu.size(); ++b)
    if (c.ctu[b]) out[start + b / 8] |= static_cast<unsigned char>(0x80 >> (b % 8));
}

// Applies a choice: dst = blend of rec (x) and filtered (f) on the CTUs that are on, rec elsewhere.
// rec/dst may be the same plane; filtered is a dense width x height plane.
template <typename Pel>
inline void apply(Pel *dst, ptrdiff_t stride, const std::vector<Pel> &filtered, int width, int height, int bitDepth,
                  int block, const Choice &c) {
  if (!c.on) return;
  const int peak = (1 << bitDepth) - 1, cols = blocksAcross(width, block);
  for (int y = 0; y < height; ++y) {
    const int row = (y / block) * cols;
    for (int x = 0; x < width; ++x) {
      if (!c.ctu.empty() && !c.ctu[static_cast<size_t>(row + x / block)]) continue;
      Pel &s = dst[static_cast<ptrdiff_t>(y) * stride + x];
      s = static_cast<Pel>(blend(s, filtered[static_cast<size_t>(y) * width + x], c.scale, peak));
    }
  }
}

// The encoder's rate-distortion decision for one picture: off, on everywhere with a scale, or on per CTU
// with a scale, whichever has the least squared error (against the original, in the units of HM's RD cost:
// divided by 4^(bitDepth - 8)) plus lambda x the payload's bits. headerBytes: bytes the picture's payload
// carries anyway (its header, else 0). mode limits the choices (kPerPicture: no CTU flags).
template <typename Pel>
inline Choice decide(const Pel *rec, ptrdiff_t recStride, const std::vector<Pel> &filtered, const Pel *org,
                     ptrdiff_t orgStride, int width, int height, int bitDepth, int block, int mode, double lambda,
                     size_t headerBytes) {
  const int cols = blocksAcross(width, block), rows = blocksAcross(height, block), n = cols * rows;
  const int peak = (1 << bitDepth) - 1;
  const double unit = static_cast<double>(1 << (2 * std::max(0, bitDepth - 8)));
  // the least-squares scale over the picture: k = 64 * <f - x, o - x> / <f - x, f - x>
  double num = 0, den = 0;
  std::vector<double> off(static_cast<size_t>(n), 0.0);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const double xv = rec[static_cast<ptrdiff_t>(y) * recStride + x];
      const double r = filtered[static_cast<size_t>(y) * width + x] - xv;
      const double e = org[static_cast<ptrdiff_t>(y) * orgStride + x] - xv;
      num += r * e;
      den += r * r;
      off[static_cast<size_t>((y / block) * cols + x / block)] += e * e;
    }
  double offTotal = 0;
  for (int b = 0; b < n; ++b) offTotal += off[static_cast<size_t>(b)];
  const double bitsBase = ueBits(static_cast<unsigned>(headerBytes));
  Choice best;
  double bestCost = offTotal / unit + lambda * bitsBase;
  if (den <= 0) return best;
  const int k0 = static_cast<int>(std::max(1.0, std::min(double(kMaxScale), 64.0 * num / den + 0.5)));
  std::vector<int> candidates;
  for (int k = k0 - 2; k <= k0 + 2; ++k)
    if (k >= 1 && k <= kMaxScale) candidates.push_back(k);
  if (std::find(candidates.begin(), candidates.end(), 64) == candidates.end()) candidates.push_back(64);
  const size_t flagBytes = static_cast<size_t>((n + 7) / 8);
  std::vector<double> on(static_cast<size_t>(n));
  for (size_t i = 0; i < candidates.size(); ++i) {
    const int k = candidates[i];
    std::fill(on.begin(), on.end(), 0.0);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const int xv = rec[static_cast<ptrdiff_t>(y) * recStride + x];
        const double d = blend(xv, filtered[static_cast<size_t>(y) * width + x], k, peak) -
                         org[static_cast<ptrdiff_t>(y) * orgStride + x];
        on[static_cast<size_t>((y / block) * cols + x / block)] += d * d;
      }
    double all = 0, switched = 0;
    int kept = 0;
    for (int b = 0; b < n; ++b) {
      all += on[static_cast<size_t>(b)];
      switched += std::min(on[static_cast<size_t>(b)], off[static_cast<size_t>(b)]);
      kept += on[static_cast<size_t>(b)] < off[static_cast<size_t>(b)];
    }
    const double costAll = all / unit + lambda * (ueBits(static_cast<unsigned>(headerBytes + 1)) + 8.0);
    if (costAll < bestCost) {
      bestCost = costAll;
      best.on = true;
      best.scale = k;
      best.ctu.clear();
    }
    if (mode < kPerCtu || kept == 0 || kept == n) continue;
    const double costFlags =
        switched / unit + lambda * (ueBits(static_cast<unsigned>(headerBytes + 1 + flagBytes)) + 8.0 * (1 + flagBytes));
    if (costFlags < bestCost) {
      bestCost = costFlags;
      best.on = true;
      best.scale = k;
      best.ctu.assign(static_cast<size_t>(n), 0);
      for (int b = 0; b < n; ++b)
        best.ctu[static_cast<size_t>(b)] = on[static_cast<size_t>(b)] < off[static_cast<size_t>(b)];
    }
  }
  return best;
}

// The decoder's reading of one picture's payload. Returns false with `error` on a payload that cannot be
// followed. `mode` and `seenHeader` carry the stream's header from picture to picture; `id` is the loaded
// model's id (-1: no model loaded, any id accepted).
inline bool parse(const std::vector<unsigned char> &p, int width, int height, int block, int id, int &mode,
                  bool &seenHeader, Choice &choice, std::string &error) {
  choice = Choice();
  size_t at = 0;
  if (!p.empty() && p[0] == 0x00) {
    if (p.size() < kHeaderBytes || (p[1] >> 4) != kVersion || (p[1] & 0x0f) > kPerCtu) {
      error = "a codecnn payload of another version (this decoder reads version " + std::to_string(kVersion) +
              "): decode it with the hm_bridge that encoded it";
      return false;
    }
    const int streamId = (p[2] << 8) | p[3];
    if (id >= 0 && streamId != id) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "the bitstream was coded with another model (id 0x%04x; --CnnModel's is 0x%04x): give the "
                    "encoder's --CnnModel",
                    streamId, id);
      error = buf;
      return false;
    }
    if (seenHeader && mode != (p[1] & 0x0f)) {
      error = "the codecnn header changes its mode within the bitstream (damaged)";
      return false;
    }
    mode = p[1] & 0x0f;
    seenHeader = true;
    at = kHeaderBytes;
  }
  if (!seenHeader) {
    error =
        "no codecnn header before this picture: the bitstream was not coded with a codecnn filter (drop "
        "--CnnModel), or decoding did not start at its first picture";
    return false;
  }
  if (at == p.size()) {
    choice.on = mode == kAlwaysOn;
    choice.scale = 1 << kScaleShift;
    return true;
  }
  if (mode == kAlwaysOn) {
    error = "codecnn parameters in an always-on bitstream (damaged)";
    return false;
  }
  const int k = p[at] & 0x7f;
  const bool flags = (p[at] & 0x80) != 0;
  const int n = blocksAcross(width, block) * blocksAcross(height, block);
  const size_t want = at + 1 + (flags ? static_cast<size_t>((n + 7) / 8) : 0);
  if (k == 0 || p.size() != want || (flags && mode != kPerCtu)) {
    error = "codecnn parameters that do not fit the picture (damaged, or another picture or CTU size)";
    return false;
  }
  choice.on = true;
  choice.scale = k;
  if (flags) {
    choice.ctu.resize(static_cast<size_t>(n));
    for (int b = 0; b < n; ++b)
      choice.ctu[static_cast<size_t>(b)] = (p[at + 1 + static_cast<size_t>(b / 8)] >> (7 - b % 8)) & 1;
  }
  return true;
}

}  // namespace codecnn_signal

#endif  // CODECNN_SIGNAL_H
