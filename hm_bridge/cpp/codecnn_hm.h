// codecnn_hm.h -- the glue HM calls after SAO, on the encoder (TEncGOP::compressGOP) and the decoder
// (TDecGop::filterPicture) side alike, so both filter the identical picture with the same network.
// Header-only; `python -m hm_bridge patch-hm HM_DIR` copies it (with cnnw.h) into HM's
// source/Lib/TLibCommon and inserts the calls. The model path comes from HM's own command line:
// `--CnnModel=model.cnnw` on TAppEncoder and TAppDecoder (empty: no filtering, HM unchanged).
// Use an int16 model (`codecnn export --int16`) so encoder and decoder agree on any machine.
//
// Nothing here stops the program: filterLuma returns false with a message, and the line patch-hm
// inserts into HM prints it and exits (an encoder and a decoder that silently disagree would be worse
// than no output), e.g.
//   std::string err;
//   if (!codecnn_hm::filterLuma(luma, stride, width, height, bitDepth, qp, err)) { print err; exit(1); }
//
// Integrity: the loader verifies the model file's CRC-32 (a damaged file is refused like a missing one:
// HM stops) and the load line prints it, "codecnn: luma filter rdn16.cnnw (int16, CRC-32 0x1a2b3c4d) after
// SAO", in the encoder's and the decoder's output alike: equal checksums, same weights. A version 1 file
// (no checksum) is used with a warning on stderr asking to re-export it.
//
// Threads: the model is loaded once, on the first call, by a function-local static (initialised
// thread-safely by C++11); filtering only reads it, so filterLuma may be called from several threads at
// once, on different planes. Set modelPath() (HM's option parser does) before the first call: later
// changes are not seen.
//
// Filter threads: the environment variable CODECNN_THREADS=N (read once, at the first call; unset, empty
// or not a whole number from 1 to 256: 1) shares each picture's CTUs out among N threads. The filtered
// picture is the same with any N (each CTU is computed alike whichever thread runs it), so an encoder and a
// decoder may use different counts. HM itself runs on one thread; N = 2 or more uses further cores.
#ifndef CODECNN_HM_H
#define CODECNN_HM_H

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>  // std::exit and EXIT_FAILURE (the line patch-hm inserts into HM), getenv, strtol
#include <cstring>  // std::memcmp and std::memcpy, for the lines patch-hm inserts
#include <string>
#include <vector>

#include "cnnw.h"

namespace codecnn_hm {

// Storage of the --CnnModel option (HM's option parser writes into it).
inline std::string &modelPath() {
  static std::string path;
  return path;
}

// The model named by modelPath(), loaded once, with the outcome of loading it.
struct Loaded {
  cnnw::Model model;
  cnnw::Status status;
  bool active;  // a model was given and it loaded
  explicit Loaded(const std::string &path) : status(cnnw::Status::good()), active(false) {
    if (path.empty()) return;
    status = model.load(path);
    if (!status.ok) {
      status.message = "cannot use --CnnModel: " + status.message;
      return;
    }
    active = true;
    if (!status.message.empty()) std::fprintf(stderr, "codecnn: %s\n", status.message.c_str());  // a warning
    const std::string crc = model.hasChecksum() ? "CRC-32 " + model.checksumHex() : "no checksum";
    std::fprintf(stdout, "codecnn: luma filter %s (%s, %s) after SAO\n", path.c_str(),
                 model.isInt16() ? "int16" : "float32", crc.c_str());
  }
};

inline const Loaded &loaded() {
  static const Loaded state(modelPath());  // C++11: initialised exactly once, even with threads
  return state;
}

// The thread count of CODECNN_THREADS as the glue reads it: a whole number from 1 to 256, else 1.
inline int threadsFromEnv(const char *text) {
  if (text == nullptr || *text == '\0') return 1;
  char *end = nullptr;
  const long n = std::strtol(text, &end, 10);
  return (*end == '\0' && n >= 1 && n <= 256) ? static_cast<int>(n) : 1;
}

inline int filterThreads() {
  static const int threads = threadsFromEnv(std::getenv("CODECNN_THREADS"));  // read once
  return threads;
}

// Filters the reconstructed luma plane in place (HM's Pel samples, stride, size, bit depth, slice QP).
// Returns true when it was filtered, or when no model is given (nothing to do); false, with ``error``
// set, when the model cannot be loaded or filtering fails: the caller reports it and stops.
template <typename Pel>
inline bool filterLuma(Pel *luma, int stride, int width, int height, int bitDepth, int qp, std::string &error) {
  const Loaded &m = loaded();
  if (!m.status.ok) {
    error = m.status.message;
    return false;
  }
  if (!m.active) return true;
  cnnw::Status st =
      m.model.filterPlane(luma, stride, luma, stride, width, height, bitDepth, qp, 128, nullptr, filterThreads());
  if (!st.ok) {
    error = "filtering failed: " + st.message;
    return false;
  }
  return true;
}

// ---- The per-CTU switch, decided by the encoder and signalled in the bitstream ------------------------
// With `--CnnFlags=1` on TAppEncoder, the encoder filters the picture, keeps the filter only on the CTUs
// where it lowers the squared error against the original picture, and writes that choice into a suffix
// SEI of the picture's access unit: user_data_unregistered (payloadType 5, H.265 D.2.7) with
//   uuid_iso_iec_11578  the 16 bytes of flagsUuid() (codecnn's CTU flags, version 1);
//   user_data_payload   version (1 byte, = 1), log2 of the block size (1 byte, HM's CTU: 6 for 64),
//                       number of blocks (2 bytes, big-endian), then one flag per block in raster order,
//                       most significant bit first, padded with zero bits to a whole byte.
// A picture whose blocks are all on carries no SEI (always on is the default), so such a stream costs
// nothing extra. The decoder runs after the picture's suffix SEIs are read (TDecGop::filterPicture), filters
// the same picture and keeps the filtered samples on the flagged blocks only; a picture without the SEI is
// filtered everywhere. A decoder given such a bitstream without --CnnModel stops with a message rather than
// decode wrong pictures. HM's log counts the bits of the coded slices, not of suffix SEIs (nor the MD5 SEI):
// `codecnn evaluate --in-loop` adds the flags' SEI bits to the test's rate.

inline bool &ctuFlagsEnabled() {  // storage of the encoder's --CnnFlags option
  static bool on = false;
  return on;
}

inline const unsigned char *flagsUuid() {
  static const unsigned char uuid[16] = {0x63, 0x6f, 0x64, 0x65, 0x63, 0x6e, 0x6e, 0x2d,   // "codecnn-"
                                         0x63, 0x74, 0x75, 0x66, 0x6c, 0x61, 0x67, 0x31};  // "ctuflag1"
  return uuid;
}

namespace detail {

inline int log2Exact(int v) {
  int k = 0;
  while ((1 << k) < v) ++k;
  return (1 << k) == v ? k : -1;
}

// Copy the unfiltered samples back into the blocks whose flag is 0.
template <typename Pel>
inline void restoreBlocks(Pel *luma, int stride, int width, int height, const std::vector<Pel> &before, int block,
                          const std::vector<unsigned char> &on) {
  const int cols = (width + block - 1) / block;
  for (int by = 0, b = 0; by * block < height; ++by)
    for (int bx = 0; bx < cols; ++bx, ++b) {
      if (on[static_cast<size_t>(b)]) continue;
      const int y1 = std::min(height, (by + 1) * block), x0 = bx * block, x1 = std::min(width, x0 + block);
      for (int y = by * block; y < y1; ++y)
        for (int x = x0; x < x1; ++x)
          luma[static_cast<ptrdiff_t>(y) * stride + x] = before[static_cast<size_t>(y) * width + x];
    }
}

template <typename Pel>
inline std::vector<Pel> copyPlane(const Pel *luma, int stride, int width, int height) {
  std::vector<Pel> out(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      out[static_cast<size_t>(y) * width + x] = luma[static_cast<ptrdiff_t>(y) * stride + x];
  return out;
}

}  // namespace detail

// Encoder side: filter in place; with --CnnFlags, switch per block of `block` samples (HM's CTU size)
// against the original `org` and return the SEI payload in `payload` (empty: no SEI to write, every block
// on or no flags asked for). Returns false with `error` as filterLuma does.
template <typename Pel>
inline bool filterLumaEncoder(Pel *luma, int stride, int width, int height, int bitDepth, int qp, const Pel *org,
                              int orgStride, int block, std::vector<unsigned char> &payload, std::string &error) {
  payload.clear();
  if (!ctuFlagsEnabled() || !loaded().active) return filterLuma(luma, stride, width, height, bitDepth, qp, error);
  const int lg = detail::log2Exact(block);
  if (lg < 3 || lg > 8) {
    error = "--CnnFlags: the CTU size must be a power of two from 8 to 256";
    return false;
  }
  const std::vector<Pel> before = detail::copyPlane(luma, stride, width, height);
  if (!filterLuma(luma, stride, width, height, bitDepth, qp, error)) return false;
  const int cols = (width + block - 1) / block, rows = (height + block - 1) / block, n = cols * rows;
  if (n > 65535) {
    error = "--CnnFlags: more than 65535 CTUs in a picture";
    return false;
  }
  std::vector<unsigned char> on(static_cast<size_t>(n), 1);
  bool all = true;
  for (int by = 0, b = 0; by < rows; ++by)
    for (int bx = 0; bx < cols; ++bx, ++b) {
      long long sseOff = 0, sseOn = 0;  // squared error without and with the filter
      for (int y = by * block; y < std::min(height, (by + 1) * block); ++y)
        for (int x = bx * block; x < std::min(width, (bx + 1) * block); ++x) {
          const long long o = org[static_cast<ptrdiff_t>(y) * orgStride + x];
          const long long d0 = before[static_cast<size_t>(y) * width + x] - o;
          const long long d1 = luma[static_cast<ptrdiff_t>(y) * stride + x] - o;
          sseOff += d0 * d0;
          sseOn += d1 * d1;
        }
      on[static_cast<size_t>(b)] = sseOn < sseOff ? 1 : 0;
      all = all && on[static_cast<size_t>(b)];
    }
  if (all) return true;
  detail::restoreBlocks(luma, stride, width, height, before, block, on);
  payload.push_back(1);
  payload.push_back(static_cast<unsigned char>(lg));
  payload.push_back(static_cast<unsigned char>(n >> 8));
  payload.push_back(static_cast<unsigned char>(n & 0xff));
  payload.resize(4 + static_cast<size_t>((n + 7) / 8), 0);
  for (int b = 0; b < n; ++b)
    if (on[static_cast<size_t>(b)])
      payload[4 + static_cast<size_t>(b / 8)] |= static_cast<unsigned char>(0x80 >> (b % 8));
  return true;
}

// Decoder side: filter in place and follow the encoder's flags when the picture carries them (`payload`:
// the user data of the SEI whose uuid is flagsUuid(), or NULL: no such SEI, filter everywhere).
template <typename Pel>
inline bool filterLumaDecoder(Pel *luma, int stride, int width, int height, int bitDepth, int qp,
                              const std::vector<unsigned char> *payload, std::string &error) {
  if (payload == NULL) return filterLuma(luma, stride, width, height, bitDepth, qp, error);
  if (loaded().status.ok && !loaded().active) {
    error = "this bitstream carries codecnn CTU flags: it was coded with a codecnn filter; give the same --CnnModel";
    return false;
  }
  const std::vector<unsigned char> &p = *payload;
  if (p.size() < 4 || p[0] != 1 || p[1] < 3 || p[1] > 8) {
    error = "a codecnn CTU-flags SEI of an unknown version or block size";
    return false;
  }
  const int block = 1 << p[1], cols = (width + block - 1) / block, rows = (height + block - 1) / block;
  const int n = (p[2] << 8) | p[3];
  if (n != cols * rows || p.size() != 4 + static_cast<size_t>((n + 7) / 8)) {
    error = "a codecnn CTU-flags SEI that does not fit the picture (damaged, or another picture size)";
    return false;
  }
  const std::vector<Pel> before = detail::copyPlane(luma, stride, width, height);
  if (!filterLuma(luma, stride, width, height, bitDepth, qp, error)) return false;
  std::vector<unsigned char> on(static_cast<size_t>(n));
  for (int b = 0; b < n; ++b) on[static_cast<size_t>(b)] = (p[4 + static_cast<size_t>(b / 8)] >> (7 - b % 8)) & 1;
  detail::restoreBlocks(luma, stride, width, height, before, block, on);
  return true;
}

}  // namespace codecnn_hm

#endif  // CODECNN_HM_H
