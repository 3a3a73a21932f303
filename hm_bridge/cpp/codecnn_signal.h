// codecnn_signal.h -- what the encoder decides for each picture and signals in the bitstream, and how the
// decoder follows it: per picture on/off, the QP the network is given, a residual scale fitted at the
// encoder, and per-CTU on/off, each decided with the rate counted (distortion + lambda x bits). Header-only,
// no HM types (codecnn_hm.h is the glue).
//
// The payload travels in the first slice segment header of each picture, as HEVC's
// slice_segment_header_extension_data_byte (H.265 7.3.6.1; the PPS's slice_segment_header_extension_present_flag
// is set when the encoder runs a model). Every decoder skips those bytes; HM counts them in the slice's bits,
// so the rate HM reports includes the signalling. Layout (version 3, what the encoder writes):
//
//   header  (on the first picture and on every IRAP picture whose POC is a multiple of 32; 4 bytes)
//     0x00                    marks a header (a picture's parameters never start with 0x00 or 0x80)
//     0x30 | place | mode     the version in the high nibble; mode (bits 1..0) 0 always on (no parameters
//                             follow on any picture: every picture is filtered with the slice QP), 1 per
//                             picture, 2 per picture and per CTU; place (bit 2, 0x04): the filter runs after
//                             deblocking and before SAO (0: after SAO); bit 3 is 0
//     model id (2 bytes)      the low 16 bits of the model file's CRC-32, big-endian (0 for a file without)
//   parameters (modes 1 and 2; absent: the filter is off on this picture)
//     byte 0                  bit 7: CTU flags follow; bits 6..4: q, the network is given the QP
//                             slice QP + 4 (q - 5) (q = 5: the slice QP; clipped to 0..51); bits 3..0: s, the
//                             scale k = 20 + 4 s (s = 11: k = 64); q = 0 with s = 0 is not used (a
//                             byte 0x00 would read as a header)
//     flags (bit 7 set)       2 bits g, then one bit per group of 2^g x 2^g CTUs (g = 0, 1, 2: a CTU, 2x2 CTUs,
//                             4x4 CTUs; 3 is not used) of the SPS's CTU size, the groups in raster order (those
//                             at the right and bottom edges cover what is left), most significant bit first,
//                             zero-padded to a whole byte; 1 = filtered
//
// Version 2 (still read): the same, but the flags are one bit per CTU with no g (measured: the flags were most
// of the payload, 0.4-1.1 % of the rate of bikes at 640x272 in random access, and groups of 2x2 CTUs halve
// them). Version 1 (still read): byte 0 is bit 7 flags, bits 6..0 the scale k (1..127), the network always given
// the slice QP. The QP offset is what makes inter pictures gain: a B picture of a high temporal layer is coded at
// a QP well above its references' but copies most of their content, so the network, told the slice QP,
// filters it as if it were much worse than it is (measured: carphone RA, QP 32, the best offset is -8 to
// -12 on layers 3-4, 0 on the I picture).
//
// A filtered sample is clip(x + ((k * (f - x) + 32) >> 6)), x the picture after SAO, f the network's output
// (k = 64 gives f itself); the shift is a floor on negative values too. Encoder and decoder compute it
// alike, so the decoder's picture equals the encoder's (HM's MD5 SEI checks it).
#ifndef CODECNN_SIGNAL_H
#define CODECNN_SIGNAL_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace codecnn_signal {

static const int kVersion = 3;        // what the encoder writes
static const int kOldestVersion = 1;  // what the decoder still reads
static const int kScaleShift = 6;     // scale = k / 64
static const int kMaxScale = 127;     // version 1's k: 1..127
static const int kQpStep = 4;         // version 2: the network's QP is slice QP + kQpStep (q - kQpSame)
static const int kQpSame = 5;
static const int kQpIndices = 8;
static const int kScaleBase = 20;  // version 2: k = kScaleBase + kScaleStep s, s = 0..15
static const int kScaleStep = 4;
static const int kScaleIndices = 16;
static const size_t kHeaderBytes = 4;
static const int kGroupBits = 2;  // version 3: the flags' group size g (groups of 2^g x 2^g CTUs)
static const int kGroupLogs = 3;  // g = 0, 1, 2
enum Mode { kAlwaysOn = 0, kPerPicture = 1, kPerCtu = 2 };
static const int kModeBits = 0x03;   // the header's mode field (byte 1, bits 1..0)
static const int kBeforeSao = 0x04;  // the header's placement bit (byte 1): the filter runs before SAO

inline int modelId(uint32_t crc) { return static_cast<int>(crc & 0xffffu); }

// Whether the encoder writes a header on this picture (the decoder only needs one before the first
// picture it decodes; every 32nd IRAP repeats it for a decoder that starts at a random access point).
inline bool headerDue(bool firstPicture, bool irap, int poc) { return firstPicture || (irap && poc % 32 == 0); }

inline void appendHeader(std::vector<unsigned char> &out, int mode, int id, bool beforeSao = false) {
  out.push_back(0x00);
  out.push_back(static_cast<unsigned char>((kVersion << 4) | (beforeSao ? kBeforeSao : 0) | mode));
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

// Version 3's flags: how many groups of 2^g x 2^g CTUs a picture of cols x rows CTUs has, which group a CTU
// is in, and the bytes the flags take (g and one bit per group).
inline int groupsOf(int cols, int rows, int g) { return blocksAcross(cols, 1 << g) * blocksAcross(rows, 1 << g); }
inline int groupOf(int b, int cols, int g) {
  return ((b / cols) >> g) * blocksAcross(cols, 1 << g) + ((b % cols) >> g);
}
inline size_t flagBytes(int cols, int rows, int g) {
  return static_cast<size_t>((kGroupBits + groupsOf(cols, rows, g) + 7) / 8);
}

// Version 2's fields: the network's QP for index q, and the scale k for index s.
inline int qpFor(int sliceQp, int q) { return std::max(0, std::min(51, sliceQp + kQpStep * (q - kQpSame))); }
inline int scaleOf(int s) { return kScaleBase + kScaleStep * s; }
inline int scaleIndex(int k) { return (k - kScaleBase) / kScaleStep; }  // k on version 2's grid

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
  int scale;                       // k (version 2: on its grid, 20..80)
  int qpIndex;                     // q: the network was given slice QP + 4 (q - 5)
  std::vector<unsigned char> ctu;  // per-CTU flags (empty: every CTU on)
  int group;                       // version 3: the flags are per group of 2^group x 2^group CTUs
  double cost;                     // the encoder's: distortion + lambda x bits of this choice
  Choice() : on(false), scale(0), qpIndex(kQpSame), group(0), cost(0) {}
};

// A picture's parameters, version 3 (nothing when the filter is off); cols: CTUs across the picture. The
// CTUs of a group share one flag (the encoder's choice gives them the same).
inline void appendParameters(std::vector<unsigned char> &out, const Choice &c, int cols) {
  if (!c.on) return;
  out.push_back(static_cast<unsigned char>((c.ctu.empty() ? 0 : 0x80) | (c.qpIndex << 4) | scaleIndex(c.scale)));
  if (c.ctu.empty()) return;
  const int n = static_cast<int>(c.ctu.size()), rows = n / cols, groups = groupsOf(cols, rows, c.group);
  const size_t start = out.size();
  out.resize(start + flagBytes(cols, rows, c.group), 0);
  out[start] = static_cast<unsigned char>(c.group << (8 - kGroupBits));
  std::vector<unsigned char> flag(static_cast<size_t>(groups), 0);
  for (int b = 0; b < n; ++b) flag[static_cast<size_t>(groupOf(b, cols, c.group))] |= c.ctu[static_cast<size_t>(b)];
  for (int i = 0; i < groups; ++i)
    if (flag[static_cast<size_t>(i)]) {
      const int bit = kGroupBits + i;
      out[start + static_cast<size_t>(bit / 8)] |= static_cast<unsigned char>(0x80 >> (bit % 8));
    }
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

// The encoder's rate-distortion decision for one picture filtered with the network given QP index q: off, on
// everywhere with a scale, or on per CTU with a scale, whichever has the least squared error (against the
// original, in the units of HM's RD cost: divided by 4^(bitDepth - 8)) plus lambda x the payload's bits
// (`cost` in the result). headerBytes: bytes the picture's payload carries anyway (its header, else 0). mode
// limits the choices (kPerPicture: no CTU flags). The scales tried: the least-squares fit over the picture
// and the fit over the CTUs it is kept on (alternating the two), rounded to version 2's grid with their
// neighbours, and k = 64.
template <typename Pel>
inline Choice decide(const Pel *rec, ptrdiff_t recStride, const std::vector<Pel> &filtered, const Pel *org,
                     ptrdiff_t orgStride, int width, int height, int bitDepth, int block, int mode, double lambda,
                     size_t headerBytes, int q = kQpSame) {
  const int cols = blocksAcross(width, block), rows = blocksAcross(height, block), n = cols * rows;
  const int peak = (1 << bitDepth) - 1;
  const double unit = static_cast<double>(1 << (2 * std::max(0, bitDepth - 8)));
  // per CTU: <f - x, o - x>, <f - x, f - x> and the error off; the least-squares k = 64 num / den
  std::vector<double> off(static_cast<size_t>(n), 0.0), num(static_cast<size_t>(n), 0.0), den(num);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const size_t b = static_cast<size_t>((y / block) * cols + x / block);
      const double xv = rec[static_cast<ptrdiff_t>(y) * recStride + x];
      const double r = filtered[static_cast<size_t>(y) * width + x] - xv;
      const double e = org[static_cast<ptrdiff_t>(y) * orgStride + x] - xv;
      num[b] += r * e;
      den[b] += r * r;
      off[b] += e * e;
    }
  double offTotal = 0, numAll = 0, denAll = 0;
  for (int b = 0; b < n; ++b) {
    offTotal += off[static_cast<size_t>(b)];
    numAll += num[static_cast<size_t>(b)];
    denAll += den[static_cast<size_t>(b)];
  }
  // The scale fitted on the CTUs it is kept on: a CTU gains at scale a = k / 64 when its error,
  // off - 2 a num + a^2 den (rounding aside), is below off, i.e. when a den < 2 num; refit a on those, repeat.
  double keptFit = denAll > 0 ? numAll / denAll : 0.0;
  for (int it = 0; it < 6 && mode == kPerCtu; ++it) {
    double nk = 0, dk = 0;
    for (int b = 0; b < n; ++b)
      if (keptFit * den[static_cast<size_t>(b)] < 2 * num[static_cast<size_t>(b)]) {
        nk += num[static_cast<size_t>(b)];
        dk += den[static_cast<size_t>(b)];
      }
    if (dk <= 0) break;
    const double next = nk / dk;
    if (std::fabs(next - keptFit) < 1e-3) break;
    keptFit = next;
  }
  Choice best;
  best.cost = offTotal / unit + lambda * ueBits(static_cast<unsigned>(headerBytes));
  if (denAll <= 0) return best;
  // the scale indices tried: around the picture's fit and the kept CTUs' fit, and k = 64 (the network itself)
  std::vector<int> grid(1, (64 - kScaleBase) / kScaleStep);
  const double fits[2] = {64.0 * numAll / denAll, 64.0 * keptFit};
  for (int f = 0; f < 2; ++f) {
    const int s0 = static_cast<int>(std::floor((fits[f] - kScaleBase) / kScaleStep + 0.5));
    for (int s = s0 - 1; s <= s0 + 1; ++s)
      if (s >= 0 && s < kScaleIndices && std::find(grid.begin(), grid.end(), s) == grid.end()) grid.push_back(s);
  }
  std::vector<double> on(static_cast<size_t>(n)), onG, offG;
  for (size_t i = 0; i < grid.size(); ++i) {
    const int k = scaleOf(grid[i]);
    if (q == 0 && grid[i] == 0) continue;  // byte 0x00 / 0x80 would read as a header
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
    if (costAll < best.cost) {
      best.cost = costAll;
      best.on = true;
      best.scale = k;
      best.qpIndex = q;
      best.ctu.clear();
    }
    if (mode < kPerCtu || kept == 0 || kept == n) continue;
    // per-CTU flags, a flag per group of 2^g x 2^g CTUs: fewer bits, coarser switching
    for (int g = 0; g < kGroupLogs; ++g) {
      const int groups = groupsOf(cols, rows, g);
      if (groups < 2) break;
      onG.assign(static_cast<size_t>(groups), 0.0);
      offG.assign(static_cast<size_t>(groups), 0.0);
      for (int b = 0; b < n; ++b) {
        const size_t gi = static_cast<size_t>(groupOf(b, cols, g));
        onG[gi] += on[static_cast<size_t>(b)];
        offG[gi] += off[static_cast<size_t>(b)];
      }
      double sw = 0;
      int keptG = 0;
      for (size_t gi = 0; gi < onG.size(); ++gi) {
        sw += std::min(onG[gi], offG[gi]);
        keptG += onG[gi] < offG[gi];
      }
      if (keptG == 0 || keptG == groups) continue;
      const size_t fb = flagBytes(cols, rows, g);
      const double costFlags = sw / unit + lambda * (ueBits(static_cast<unsigned>(headerBytes + 1 + fb)) +
                                                     8.0 * static_cast<double>(1 + fb));
      if (costFlags < best.cost) {
        best.cost = costFlags;
        best.on = true;
        best.scale = k;
        best.qpIndex = q;
        best.group = g;
        best.ctu.assign(static_cast<size_t>(n), 0);
        for (int b = 0; b < n; ++b) {
          const size_t gi = static_cast<size_t>(groupOf(b, cols, g));
          best.ctu[static_cast<size_t>(b)] = onG[gi] < offG[gi];
        }
      }
    }
  }
  return best;
}

// The stream's state as the decoder carries it from picture to picture: the header's version, mode and
// placement.
struct Stream {
  bool seenHeader;
  int version;
  int mode;
  bool beforeSao;
  Stream() : seenHeader(false), version(kVersion), mode(kAlwaysOn), beforeSao(false) {}
};

// Whether a header's version and its byte 1's low nibble (mode, and from version 3 the placement bit) are
// ones this decoder reads.
inline bool headerReadable(int version, int field) {
  const int placeBits = version >= 3 ? kBeforeSao : 0;
  return version >= kOldestVersion && version <= kVersion && (field & ~placeBits) <= kPerCtu;
}

// Where the decoder filters a picture with this payload: before SAO (true) or after it, as its header says,
// else as the stream's header said (a payload without a header, or a damaged header: after SAO, where
// parse() reports what is wrong).
inline bool placedBeforeSao(const std::vector<unsigned char> &p, const Stream &stream) {
  if (p.size() >= kHeaderBytes && p[0] == 0x00) return headerReadable(p[1] >> 4, p[1] & 0x0f) && (p[1] & kBeforeSao);
  return stream.seenHeader && stream.beforeSao;
}

// The decoder's reading of one picture's payload. Returns false with `error` on a payload that cannot be
// followed. `stream` carries the stream's header from picture to picture; `id` is the loaded model's id
// (-1: no model loaded, any id accepted). The choice's qpIndex says which QP to give the network.
inline bool parse(const std::vector<unsigned char> &p, int width, int height, int block, int id, Stream &stream,
                  Choice &choice, std::string &error) {
  choice = Choice();
  size_t at = 0;
  int &mode = stream.mode;
  bool &seenHeader = stream.seenHeader;
  if (!p.empty() && p[0] == 0x00) {
    const int version = p.size() < 2 ? 0 : p[1] >> 4;
    const int field = p.size() < 2 ? 0 : p[1] & 0x0f;
    if (p.size() < kHeaderBytes || !headerReadable(version, field)) {
      error = "a codecnn payload of another version (this decoder reads versions " + std::to_string(kOldestVersion) +
              " to " + std::to_string(kVersion) + "): decode it with the hm_bridge that encoded it";
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
    if (seenHeader &&
        (mode != (field & kModeBits) || stream.version != version || stream.beforeSao != ((field & kBeforeSao) != 0))) {
      error = "the codecnn header changes its mode, placement or version within the bitstream (damaged)";
      return false;
    }
    mode = field & kModeBits;
    stream.beforeSao = (field & kBeforeSao) != 0;
    stream.version = version;
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
    choice.on = mode == kAlwaysOn;  // always on: with the slice QP
    choice.scale = 1 << kScaleShift;
    return true;
  }
  if (mode == kAlwaysOn) {
    error = "codecnn parameters in an always-on bitstream (damaged)";
    return false;
  }
  const bool flags = (p[at] & 0x80) != 0;
  const bool v1 = stream.version == 1;
  const int k = v1 ? p[at] & 0x7f : scaleOf(p[at] & 0x0f);
  choice.qpIndex = v1 ? kQpSame : (p[at] >> 4) & 0x07;
  const int cols = blocksAcross(width, block), rows = blocksAcross(height, block), n = cols * rows;
  const bool grouped = stream.version >= 3;  // version 3: g, then a flag per group
  const int g = grouped && flags && p.size() > at + 1 ? p[at + 1] >> (8 - kGroupBits) : 0;
  const size_t want = at + 1 + (!flags ? 0 : grouped ? flagBytes(cols, rows, g) : static_cast<size_t>((n + 7) / 8));
  if ((p[at] & 0x7f) == 0 || g >= kGroupLogs || p.size() != want || (flags && mode != kPerCtu)) {
    error = "codecnn parameters that do not fit the picture (damaged, or another picture or CTU size)";
    return false;
  }
  // the bits after the last flag are zero as every encoder writes them: a set one is a damaged payload, or
  // one of a picture with fewer CTUs
  if (flags) {
    const size_t used = static_cast<size_t>(grouped ? kGroupBits + groupsOf(cols, rows, g) : n);
    for (size_t bit = used; bit < 8 * (want - at - 1); ++bit)
      if ((p[at + 1 + bit / 8] >> (7 - bit % 8)) & 1) {
        error = "codecnn parameters that do not fit the picture (padding bits set: damaged, or another picture size)";
        return false;
      }
  }
  choice.on = true;
  choice.scale = k;
  choice.group = g;
  if (flags) {
    choice.ctu.resize(static_cast<size_t>(n));
    for (int b = 0; b < n; ++b) {
      const int bit = grouped ? kGroupBits + groupOf(b, cols, g) : b;
      choice.ctu[static_cast<size_t>(b)] = (p[at + 1 + static_cast<size_t>(bit / 8)] >> (7 - bit % 8)) & 1;
    }
  }
  return true;
}

}  // namespace codecnn_signal

#endif  // CODECNN_SIGNAL_H
