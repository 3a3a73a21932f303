// codecnn_hm.h -- the glue HM calls after SAO, on the encoder (TEncGOP::compressGOP) and the decoder
// (TDecGop::filterPicture) side alike, so both filter the identical picture with the same network.
// Header-only; `python -m hm_bridge patch-hm HM_DIR` copies it (with cnnw.h) into HM's
// source/Lib/TLibCommon and inserts the calls. The model path comes from HM's own command line:
// `--CnnModel=model.cnnw` on TAppEncoder and TAppDecoder (empty: no filtering, HM unchanged).
// Use an int16 model (`codecnn export --int16`) so encoder and decoder agree on any machine.
#ifndef CODECNN_HM_H
#define CODECNN_HM_H

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cnnw.h"

namespace codecnn_hm {

// Storage of the --CnnModel option (HM's option parser writes into it).
inline std::string &modelPath() {
  static std::string path;
  return path;
}

// The model, loaded on first use; a model that fails to load stops the program with its message,
// since an encoder and a decoder that silently disagree would be worse.
inline const cnnw::Model *model() {
  static cnnw::Model m;
  static int state = 0;  // 0 not loaded, 1 loaded, 2 no model
  if (state == 0) {
    if (modelPath().empty()) {
      state = 2;
    } else {
      cnnw::Status st = m.load(modelPath());
      if (!st.ok) {
        std::fprintf(stderr, "codecnn: cannot use --CnnModel: %s\n", st.message.c_str());
        std::exit(EXIT_FAILURE);
      }
      std::fprintf(stdout, "codecnn: luma filter %s (%s) after SAO\n", modelPath().c_str(),
                   m.isInt16() ? "int16" : "float32");
      state = 1;
    }
  }
  return state == 1 ? &m : nullptr;
}

// Filters the reconstructed luma plane in place (HM's Pel samples, stride, size, bit depth, slice QP).
template <typename Pel>
inline void filterLuma(Pel *luma, int stride, int width, int height, int bitDepth, int qp) {
  const cnnw::Model *m = model();
  if (!m) return;
  cnnw::Status st = m->filterPlane(luma, stride, luma, stride, width, height, bitDepth, qp);
  if (!st.ok) {
    std::fprintf(stderr, "codecnn: filtering failed: %s\n", st.message.c_str());
    std::exit(EXIT_FAILURE);
  }
}

}  // namespace codecnn_hm

#endif  // CODECNN_HM_H
