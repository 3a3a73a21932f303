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
#ifndef CODECNN_HM_H
#define CODECNN_HM_H

#include <cstdio>
#include <cstdlib>  // std::exit and EXIT_FAILURE, for the line patch-hm inserts into HM
#include <string>

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
  cnnw::Status st = m.model.filterPlane(luma, stride, luma, stride, width, height, bitDepth, qp);
  if (!st.ok) {
    error = "filtering failed: " + st.message;
    return false;
  }
  return true;
}

}  // namespace codecnn_hm

#endif  // CODECNN_HM_H
