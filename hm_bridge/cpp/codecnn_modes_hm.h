// codecnn_modes_hm.h -- the glue of HM's intra search (encoder only) to the mode network (cnnw_modenet.h).
// `python -m hm_bridge patch-hm HM_DIR` copies it into source/Lib/TLibCommon and inserts, marked
// "// codecnn hm_bridge":
//   TEncSearch::estIntraPredLumaQT, before the rough mode decision (RMD) loop: pruneRmd() (the network's top k
//   plus the three MPMs become the RMD's candidates; the full-RD candidate count is reduced), and in the loop
//   "if (!cnnAllowed[uiMode]) continue;" (the other modes get no Hadamard SATD);
//   TAppEncCfg.cpp: the options and, after HM parsed them and before encoding, prepare(): a bad option or a model
//   that cannot be used stops HM with one line ("ERROR: codecnn: ...").
// TAppEncoder options:
//   --CnnModeModel=modes.cnnw  the mode network (codecnn export of a modenet checkpoint, float32 or --int16: an
//                              int16 model ranks from integer samples, its logits the same on every machine;
//                              empty: no network)
//   --CnnModeK=K               the network's top K modes (1..35, default 10) and the MPMs go through the RMD
//   --CnnModeMinSize=S         the network prunes blocks of S x S and larger only (4, 8, 16, 32; default 4):
//                              a 4x4 block's 35 Hadamard SATDs cost about what the network does
//   --CnnModeRd=R              at most R full-RD candidates from the RMD (HM: 8 for 4x4 and 8x8, 3 above;
//                              0 = HM's counts); works with or without a model. The MPMs are added as HM does.
// The decoder is untouched: the bitstream is standard HEVC whatever the options (only the encoder's choices
// change), so an unmodified HM decoder decodes it.
//
// Reference availability for the network's canvas is HM's z-scan availability computed from the block's
// position (one slice and one tile per picture, HM's default; with several slices or tiles some references
// the network sees as available are not: the modes it ranks are then less good, the bitstream still valid).
// At exit the time spent in the network (canvas included) is printed: "codecnn: mode network: B blocks,
// T s (U us per block)", for the network's share of the encoder time.
#ifndef CODECNN_MODES_HM_H
#define CODECNN_MODES_HM_H

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>  // std::exit and EXIT_FAILURE (the line patch-hm inserts into HM)
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "cnnw_modenet.h"

namespace codecnn_modes {

// Storage of the options (HM's option parser writes into them).
inline std::string &modelPath() {
  static std::string path;
  return path;
}
inline int &topK() {
  static int k = 10;
  return k;
}
inline int &rdCount() {
  static int r = 0;
  return r;
}
inline int &minSize() {
  static int n = 4;
  return n;
}

struct State {
  cnnw::ModeNet net;
  cnnw::ModeNet::Scratch scratch;
  std::vector<float> canvas;
  std::vector<int32_t> icanvas;  // int16 models
  bool active;
  long blocks;
  double seconds;
  State() : active(false), blocks(0), seconds(0.0) {}
  ~State() {
    if (active && blocks)
      std::printf("codecnn: mode network: %ld blocks, %.3f s (%.3f us per block)\n", blocks, seconds,
                  1e6 * seconds / static_cast<double>(blocks));
  }
};

inline State &state() {
  static State s;
  return s;
}

// A luma filter's model path (--CnnModel, --CnnInterModel) that holds a mode network: the message, else empty.
// (The luma filter loads its model at the first picture; this refuses the mix-up before encoding.)
inline std::string modeNetworkAsFilter(const std::string &path, const char *option) {
  if (path.empty()) return std::string();
  std::ifstream f(path.c_str(), std::ios::binary);
  unsigned char head[8] = {0};
  if (!f.read(reinterpret_cast<char *>(head), 8) || std::memcmp(head, "CNNW", 4) != 0) return std::string();
  const uint32_t version = head[4] | (head[5] << 8) | (head[6] << 16) | (static_cast<uint32_t>(head[7]) << 24);
  if (version != cnnw::kModesVersion) return std::string();
  return std::string("cannot use ") + option + ": " + path +
         ": a mode network (.cnnw version 3), not a luma filter: give it to --CnnModeModel";
}

// Checks the options and loads the model; HM calls it once, after parsing its options and before encoding.
// ``filterModel``, ``interModel``: the luma filter's --CnnModel and --CnnInterModel (a mode network there is
// refused now, not at the first picture). False, with ``error`` set (one line): the caller prints it and stops.
inline bool prepare(std::string &error, const std::string &filterModel = std::string(),
                    const std::string &interModel = std::string()) {
  error = modeNetworkAsFilter(filterModel, "--CnnModel");
  if (error.empty()) error = modeNetworkAsFilter(interModel, "--CnnInterModel");
  if (!error.empty()) return false;
  if (topK() < 1 || topK() > cnnw::ModeNet::kModes) {
    error = "--CnnModeK " + std::to_string(topK()) + " is out of range (1..35: the network's top K modes)";
    return false;
  }
  if (minSize() != 4 && minSize() != 8 && minSize() != 16 && minSize() != 32) {
    error = "--CnnModeMinSize " + std::to_string(minSize()) + " is not a block size the network covers (4, 8, 16, 32)";
    return false;
  }
  if (rdCount() < 0 || rdCount() > 8) {
    error = "--CnnModeRd " + std::to_string(rdCount()) + " is out of range (0: HM's counts, 1..8 full-RD candidates)";
    return false;
  }
  State &s = state();
  if (modelPath().empty()) return true;
  cnnw::Status st = s.net.load(modelPath());
  if (!st.ok) {
    error = "cannot use --CnnModeModel: " + st.message;
    return false;
  }
  s.active = true;
  std::printf(
      "codecnn: intra mode network %s (%s, CRC-32 %s): RMD of blocks %dx%d and up over its top %d "
      "modes and the MPMs, %s\n",
      modelPath().c_str(), s.net.isInt16() ? "int16" : "float32", s.net.checksumHex().c_str(), minSize(), minSize(),
      topK(),
      rdCount() ? ("at most " + cnnw::decimal(rdCount()) + " full-RD candidates").c_str()
                : "HM's full-RD candidate counts");
  return true;
}

// z-scan order of the 4x4 unit (ux, uy) inside a CTU (bits interleaved, x in the low bit).
inline unsigned zorder(int ux, int uy) {
  unsigned z = 0;
  for (int b = 0; b < 8; ++b)
    z |= ((static_cast<unsigned>(ux) >> b & 1u) << (2 * b)) | ((static_cast<unsigned>(uy) >> b & 1u) << (2 * b + 1));
  return z;
}

// Is the sample (xn, yn) coded before the block at (xc, yc)? (H.265 6.4.1 with one slice and one tile.)
inline bool available(int xn, int yn, int xc, int yc, int width, int height, int ctu) {
  if (xn < 0 || yn < 0 || xn >= width || yn >= height) return false;
  const int wide = (width + ctu - 1) / ctu;
  const int an = (yn / ctu) * wide + xn / ctu, ac = (yc / ctu) * wide + xc / ctu;
  if (an != ac) return an < ac;
  return zorder((xn % ctu) >> 2, (yn % ctu) >> 2) < zorder((xc % ctu) >> 2, (yc % ctu) >> 2);
}

// The network's canvas (cnnw_modenet.h, codecnn.data.intra.canvas) of the n x n block at (x, y): the original
// block, HM's unfiltered reference samples (``ref``: (2n+1) wide, row 0 corner and 2n above, column 0 the 2n
// left), their availability; samples divided by the peak.
template <typename Pel>
inline void makeCanvas(const Pel *org, int orgStride, int n, const Pel *ref, int bitDepth, int x, int y, int picW,
                       int picH, int ctu, float *c) {
  const int side = 2 * n + 1, plane = side * side;
  const float inv = 1.0f / static_cast<float>((1 << bitDepth) - 1);
  std::fill(c, c + 3 * plane, 0.0f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) c[(i + 1) * side + j + 1] = static_cast<float>(org[i * orgStride + j]) * inv;
  for (int j = 0; j < side; ++j) {  // corner and above
    if (!available(x - 1 + j, y - 1, x, y, picW, picH, ctu)) continue;
    c[plane + j] = static_cast<float>(ref[j]) * inv;
    c[2 * plane + j] = 1.0f;
  }
  for (int i = 1; i < side; ++i) {  // left
    if (!available(x - 1, y + i - 1, x, y, picW, picH, ctu)) continue;
    c[plane + i * side] = static_cast<float>(ref[i * side]) * inv;
    c[2 * plane + i * side] = 1.0f;
  }
}

// The integer canvas of an int16 model (cnnw_modenet.h runInt, hm_bridge.modenet.int_canvas): as makeCanvas,
// the samples as they are (not divided by the peak), availability 0/1.
template <typename Pel>
inline void makeCanvasInt(const Pel *org, int orgStride, int n, const Pel *ref, int x, int y, int picW, int picH,
                          int ctu, int32_t *c) {
  const int side = 2 * n + 1, plane = side * side;
  std::fill(c, c + 3 * plane, 0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) c[(i + 1) * side + j + 1] = static_cast<int32_t>(org[i * orgStride + j]);
  for (int j = 0; j < side; ++j) {  // corner and above
    if (!available(x - 1 + j, y - 1, x, y, picW, picH, ctu)) continue;
    c[plane + j] = static_cast<int32_t>(ref[j]);
    c[2 * plane + j] = 1;
  }
  for (int i = 1; i < side; ++i) {  // left
    if (!available(x - 1, y + i - 1, x, y, picW, picH, ctu)) continue;
    c[plane + i * side] = static_cast<int32_t>(ref[i * side]);
    c[2 * plane + i * side] = 1;
  }
}

// Before HM's RMD loop: ``allowed`` the modes the RMD evaluates (all, without a model or for a block the
// network does not cover; else the network's top k and the MPMs ``mpm``); returns the full-RD candidate count
// (HM's ``numModesForFullRD``, reduced to --CnnModeRd and to the number of allowed modes).
template <typename Pel>
inline int pruneRmd(const Pel *org, int orgStride, int width, int height, const Pel *ref, int bitDepth, int qp, int x,
                    int y, int picW, int picH, int ctu, const int mpm[3], int numModesForFullRD, bool allowed[35]) {
  std::fill(allowed, allowed + cnnw::ModeNet::kModes, true);
  if (rdCount() > 0) numModesForFullRD = std::min(numModesForFullRD, rdCount());
  State &s = state();
  if (!s.active || width != height || width < minSize() || (width != 4 && width != 8 && width != 16 && width != 32))
    return numModesForFullRD;
  const std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  const int side = 2 * width + 1;
  int top[cnnw::ModeNet::kModes];
  int k = 0;
  if (s.net.isInt16()) {
    s.icanvas.resize(static_cast<size_t>(3) * side * side);
    makeCanvasInt(org, orgStride, width, ref, x, y, picW, picH, ctu, &s.icanvas[0]);
    int16_t logits[cnnw::ModeNet::kModes];
    if (!s.net.runInt(&s.icanvas[0], width, qp, bitDepth, logits, s.scratch).ok) return numModesForFullRD;
    k = cnnw::topModes(logits, topK(), top);
  } else {
    s.canvas.resize(static_cast<size_t>(3) * side * side);
    makeCanvas(org, orgStride, width, ref, bitDepth, x, y, picW, picH, ctu, &s.canvas[0]);
    float logits[cnnw::ModeNet::kModes];
    if (!s.net.run(&s.canvas[0], width, qp, logits, s.scratch).ok) return numModesForFullRD;  // cannot fail here
    k = cnnw::topModes(logits, topK(), top);
  }
  std::fill(allowed, allowed + cnnw::ModeNet::kModes, false);
  for (int i = 0; i < k; ++i) allowed[top[i]] = true;
  for (int i = 0; i < 3; ++i)
    if (mpm[i] >= 0 && mpm[i] < cnnw::ModeNet::kModes) allowed[mpm[i]] = true;
  const int count = static_cast<int>(std::count(allowed, allowed + cnnw::ModeNet::kModes, true));
  s.blocks += 1;
  s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::min(numModesForFullRD, count);
}

}  // namespace codecnn_modes

#endif  // CODECNN_MODES_HM_H
