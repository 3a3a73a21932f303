// codecnn_hm.h -- the glue HM calls after SAO (and after deblocking, before SAO: --CnnBeforeSao), on the
// encoder (TEncGOP::compressGOP) and the decoder (TDecGop::filterPicture) side alike, so both filter the
// identical picture with the same network.
// Header-only; `python -m hm_bridge patch-hm HM_DIR` copies it (with cnnw.h and its parts) into HM's
// source/Lib/TLibCommon and inserts the calls. The model path comes from HM's own command line:
// `--CnnModel=model.cnnw` on TAppEncoder and TAppDecoder (empty: no filtering, HM unchanged), and optionally
// `--CnnInterModel=inter.cnnw`, a second model for the P and B pictures (both sides must give the same).
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
// SAO, signalling version 3", in the encoder's and the decoder's output alike: equal checksums, same weights
// (and the payload version this build writes). A version 1 file
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
#include <map>
#include <string>
#include <vector>

#include "cnnw.h"
#include "codecnn_signal.h"

namespace codecnn_hm {

// Storage of the --CnnModel option (HM's option parser writes into it).
inline std::string &modelPath() {
  static std::string path;
  return path;
}

// Storage of the encoder's --CnnBeforeSao option: 1 the filter runs after deblocking and before SAO (SAO then
// decides its offsets on the filtered picture: NNVC's place), 0 after SAO. The stream's header says which,
// and the decoder follows it (it has no such option).
inline int &beforeSao() {
  static int before = 0;
  return before;
}

// A model named on HM's command line, loaded once, with the outcome of loading it.
struct Loaded {
  cnnw::Model model;
  cnnw::Status status;
  bool active;  // a model was given and it loaded
  Loaded(const std::string &path, const char *option, const char *what) : status(cnnw::Status::good()), active(false) {
    if (path.empty()) return;
    status = model.load(path);
    if (!status.ok) {
      status.message = std::string("cannot use ") + option + ": " + status.message;
      return;
    }
    active = true;
    if (!status.message.empty()) std::fprintf(stderr, "codecnn: %s\n", status.message.c_str());  // a warning
    const std::string crc = model.hasChecksum() ? "CRC-32 " + model.checksumHex() : "no checksum";
    // (the signalling version: codecnn.eval.inloop checks it against the version it records)
    std::fprintf(stdout, "codecnn: %s %s (%s, %s) %s SAO, signalling version %d\n", what, path.c_str(),
                 model.isInt16() ? "int16" : "float32", crc.c_str(), beforeSao() ? "before" : "after",
                 codecnn_signal::kVersion);
  }
};

inline const Loaded &loaded() {
  static const Loaded state(modelPath(), "--CnnModel", "luma filter");  // C++11: initialised exactly once
  return state;
}

// Storage of the --CnnInterModel option: a second model for the inter (P and B) pictures; empty: --CnnModel
// filters every picture.
inline std::string &interModelPath() {
  static std::string path;
  return path;
}

inline const Loaded &loadedInter() {
  static const Loaded state(interModelPath(), "--CnnInterModel", "inter-picture luma filter");
  return state;
}

// The model for a picture: the inter model for P and B pictures when one is given, else --CnnModel's.
inline const Loaded &loadedFor(bool inter) {
  if (inter && !interModelPath().empty()) return loadedInter();
  return loaded();
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
inline bool filterLuma(Pel *luma, int stride, int width, int height, int bitDepth, int qp, std::string &error,
                       bool inter = false) {
  const Loaded &m = loadedFor(inter);
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

// ---- What the encoder decides per picture and per CTU, signalled in the slice header -----------------
// With a model, the encoder sets the PPS's slice_segment_header_extension_present_flag and writes, in the
// first slice segment header of each picture, the payload of codecnn_signal.h: a header (first picture,
// every 32nd IRAP), then the picture's choice. `--CnnSignal=N` on TAppEncoder: 0 filters every picture
// (nothing but the header is sent), 1 decides per picture (off, or on with a residual scale fitted by least
// squares), 2 (the default) also per CTU; each choice is made with lambda x its bits counted. In modes 1 and
// 2 the encoder also picks the QP the network is given (slice QP + 4 (q - 5), signalled; `--CnnQpSearch=0`:
// the slice QP only). The decoder
// follows the payload; HM's log counts its bytes in the slices' bits. A decoder given a codecnn bitstream
// without --CnnModel, or another model, or a bitstream without codecnn signalling with a model, stops with a
// message rather than decode wrong pictures.

inline int &signalMode() {  // storage of the encoder's --CnnSignal option
  static int mode = codecnn_signal::kPerCtu;
  return mode;
}

// Storage of the encoder's --CnnRecordInput option: a file that receives every picture as it enters the
// filter (after SAO; its references already filtered), I420 at the frame index of its POC, chroma mid-grey:
// the inputs of closed-loop training data (codecnn make-dataset --loop-model). Empty: nothing recorded.
inline std::string &recordPath() {
  static std::string path;
  return path;
}

namespace detail {

// Writes the luma plane at frame `poc` of recordPath() (created on the first call), chroma mid-grey (4:2:0).
template <typename Pel>
inline bool recordInput(const Pel *luma, int stride, int width, int height, int bitDepth, int poc, std::string &error) {
  static std::FILE *f = nullptr;
  if (f == nullptr) {
    f = std::fopen(recordPath().c_str(), "w+b");
    if (f == nullptr) {
      error = "cannot write --CnnRecordInput " + recordPath();
      return false;
    }
  }
  const int bytes = bitDepth > 8 ? 2 : 1, cw = (width + 1) / 2, ch = (height + 1) / 2;
  const long frame = static_cast<long>(bytes) * (static_cast<long>(width) * height + 2L * cw * ch);
  std::vector<unsigned char> buf(static_cast<size_t>(frame));
  size_t at = 0;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const int v = luma[static_cast<ptrdiff_t>(y) * stride + x];
      buf[at++] = static_cast<unsigned char>(v & 0xff);
      if (bytes == 2) buf[at++] = static_cast<unsigned char>((v >> 8) & 0xff);
    }
  const int grey = 1 << (bitDepth - 1);
  while (at < buf.size()) {
    buf[at++] = static_cast<unsigned char>(grey & 0xff);
    if (bytes == 2) buf[at++] = static_cast<unsigned char>((grey >> 8) & 0xff);
  }
  if (std::fseek(f, frame * poc, SEEK_SET) != 0 || std::fwrite(&buf[0], 1, buf.size(), f) != buf.size() ||
      std::fflush(f) != 0) {
    error = "cannot write --CnnRecordInput " + recordPath() + " (disk full?)";
    return false;
  }
  return true;
}

}  // namespace detail

inline int &qpSearch() {  // storage of the encoder's --CnnQpSearch option: 1 search the network's QP, 0 not
  static int search = 1;
  return search;
}

// Storage of the encoder's --CnnPropagation option, rho: a reference picture's distortion counts
// 1 + rho x (2^(top - t) - 1) times in the decision (t its temporal layer, top the stream's highest; the
// pictures below it in a hierarchical GOP see it through prediction), i.e. its lambda is divided by that.
// 0: every picture decided for itself alone. Low delay (one temporal layer) is unchanged.
inline double &propagation() {
  static double rho = 0.0;
  return rho;
}

// The weight of the distortion of a picture of temporal layer `tid` in a stream of `layers` temporal layers.
inline double propagationWeight(int tid, int layers) {
  const int below = layers - 1 - tid;
  if (below <= 0 || propagation() <= 0) return 1.0;
  return 1.0 + propagation() * static_cast<double>((1 << std::min(below, 16)) - 1);
}

// The PPS flag: on when the encoder runs a model (HM's TEncTop::xInitPPS sets it).
inline bool extensionPresent() { return !modelPath().empty(); }

// Payloads by POC: the encoder's, waiting for their slice header; the decoder's, read from the slice header
// (HM parses the next picture's first slice header before it filters the current picture).
inline std::map<int, std::vector<unsigned char>> &payloads() {
  static std::map<int, std::vector<unsigned char>> byPoc;
  return byPoc;
}

// Encoder, slice header writer: the bytes to write in this slice segment's header extension (the picture's
// payload in its first segment, nothing in the others).
inline std::vector<unsigned char> takeExtension(int poc, bool firstSegment) {
  std::vector<unsigned char> out;
  if (!firstSegment) return out;
  std::map<int, std::vector<unsigned char>>::iterator it = payloads().find(poc);
  if (it == payloads().end()) return out;
  out.swap(it->second);
  payloads().erase(it);
  return out;
}

// Decoder, slice header reader: byte `index` of the header extension of the picture `poc`.
inline void receiveExtensionByte(int poc, int index, unsigned value) {
  std::vector<unsigned char> &p = payloads()[poc];
  if (index == 0) p.clear();
  p.push_back(static_cast<unsigned char>(value));
}

namespace detail {

// The id the header carries: the low 16 bits of --CnnModel's CRC-32, XOR those of --CnnInterModel's
// rotated by 8 bits when one is given (0 for a file without a checksum).
inline int modelId() {
  const cnnw::Model &m = loaded().model;
  int id = codecnn_signal::modelId(m.hasChecksum() ? m.checksum() : 0u);
  if (!interModelPath().empty()) {
    const cnnw::Model &p = loadedInter().model;
    const int inter = codecnn_signal::modelId(p.hasChecksum() ? p.checksum() : 0u);
    id ^= ((inter << 8) | (inter >> 8)) & 0xffff;
  }
  return id;
}

// Both models loaded (when given), or the first failure in `error`.
inline bool modelsReady(std::string &error) {
  const Loaded *all[2] = {&loaded(), interModelPath().empty() ? &loaded() : &loadedInter()};
  for (int i = 0; i < 2; ++i)
    if (!all[i]->status.ok) {
      error = all[i]->status.message;
      return false;
    }
  if (!interModelPath().empty() && !loaded().active) {
    error = "--CnnInterModel needs --CnnModel (the model of the intra pictures)";
    return false;
  }
  return true;
}

template <typename Pel>
inline bool filterCopy(const Pel *luma, int stride, int width, int height, int bitDepth, int qp, bool inter,
                       std::vector<Pel> &out, std::string &error) {
  out.resize(static_cast<size_t>(width) * height);
  cnnw::Status st = loadedFor(inter).model.filterPlane(luma, stride, &out[0], width, width, height, bitDepth, qp, 128,
                                                       nullptr, filterThreads());
  if (!st.ok) error = "filtering failed: " + st.message;
  return st.ok;
}

}  // namespace detail

// Encoder side, after SAO and before the picture's slices are written: filter the reconstruction in place as
// decided against the original `org` (CTU size `block`, HM's slice lambda), and queue the picture's payload
// for its slice header. HM calls it twice per picture, `stage` true after deblocking and before SAO, false
// after SAO: it acts at the stage --CnnBeforeSao names, and returns at the other. `inter`: a P or B picture (filtered
// by --CnnInterModel when one is given); `tid`: its temporal layer, of `layers` in the stream (--CnnPropagation's
// weight). Returns false with `error` as filterLuma does.
template <typename Pel>
inline bool filterLumaEncoder(Pel *luma, int stride, int width, int height, int bitDepth, int qp, const Pel *org,
                              int orgStride, int block, int poc, bool irap, bool inter, double lambda, int tid,
                              int layers, bool stage, std::string &error) {
  if (stage != (beforeSao() != 0)) return true;
  if (!detail::modelsReady(error)) return false;
  if (!loaded().active) return true;
  if (!recordPath().empty() && !detail::recordInput(luma, stride, width, height, bitDepth, poc, error)) return false;
  const int mode = signalMode();
  if (mode < codecnn_signal::kAlwaysOn || mode > codecnn_signal::kPerCtu) {
    error = "--CnnSignal must be 0 (always on), 1 (per picture) or 2 (per picture and CTU)";
    return false;
  }
  if (block < 8 || block > 256) {
    error = "the CTU size must be from 8 to 256";
    return false;
  }
  static bool first = true;
  std::vector<unsigned char> payload;
  if (codecnn_signal::headerDue(first, irap, poc))
    codecnn_signal::appendHeader(payload, mode, detail::modelId(), beforeSao() != 0);
  first = false;
  const int ctus = codecnn_signal::blocksAcross(width, block) * codecnn_signal::blocksAcross(height, block);
  codecnn_signal::Choice c;
  int tries = 0;
  if (mode == codecnn_signal::kAlwaysOn) {
    if (!filterLuma(luma, stride, width, height, bitDepth, qp, error, inter)) return false;
    c.on = true;
    c.scale = 1 << codecnn_signal::kScaleShift;
  } else {
    // The network's QP: a hill climb over the index q from the last choice for pictures of this slice QP and
    // kind (each step filters the picture once more; --CnnQpSearch=0: the slice QP only).
    static std::map<int, int> lastQ;
    const int key = 2 * qp + (inter ? 1 : 0);
    const int start = !qpSearch() ? codecnn_signal::kQpSame
                                  : (lastQ.count(key) ? lastQ[key] : codecnn_signal::kQpSame - (inter ? 2 : 0));
    std::vector<Pel> filtered, trial;
    std::vector<int> done;
    const double lambdaFor = lambda / propagationWeight(tid, layers);
    bool failed = false;
    auto tryQ = [&](int q) -> bool {  // true when q gave a cheaper choice than the best so far
      if (q < 0 || q >= codecnn_signal::kQpIndices || std::find(done.begin(), done.end(), q) != done.end())
        return false;
      done.push_back(q);
      ++tries;
      if (!detail::filterCopy(luma, stride, width, height, bitDepth, codecnn_signal::qpFor(qp, q), inter, trial,
                              error)) {
        failed = true;
        return false;
      }
      const codecnn_signal::Choice t = codecnn_signal::decide(luma, stride, trial, org, orgStride, width, height,
                                                              bitDepth, block, mode, lambdaFor, payload.size(), q);
      if (tries > 1 && t.cost >= c.cost) return false;
      c = t;
      filtered.swap(trial);
      return true;
    };
    tryQ(start);
    if (qpSearch())
      for (int dir = -1; dir <= 1 && !failed; dir += 2) {
        int q = start + dir;
        while (!failed && tryQ(q)) q += dir;
        if (q != start + dir) break;  // this direction helped: the other cannot (one minimum, near enough)
      }
    if (failed) return false;
    if (c.on) lastQ[key] = c.qpIndex;
    codecnn_signal::apply(luma, stride, filtered, width, height, bitDepth, block, c);
    codecnn_signal::appendParameters(payload, c, codecnn_signal::blocksAcross(width, block));
  }
  const int on = !c.on ? 0 : (c.ctu.empty() ? ctus : static_cast<int>(std::count(c.ctu.begin(), c.ctu.end(), 1)));
  // one line per picture on HM's output (codecnn.eval.inloop reads it): the choice, the QP the network was
  // given, the payload's size and how many times the picture was filtered
  std::fprintf(stdout, "codecnn: POC %d %s k=%d qp=%d ctus=%d/%d bytes=%d tries=%d\n", poc, c.on ? "on" : "off",
               c.scale, c.on ? codecnn_signal::qpFor(qp, c.qpIndex) : qp, on, ctus, static_cast<int>(payload.size()),
               tries);
  if (!payload.empty()) payloads()[poc] = payload;
  return true;
}

namespace detail {
inline codecnn_signal::Stream &decoderStream() {  // the decoder's stream state, shared by its two stages
  static codecnn_signal::Stream stream;
  return stream;
}
}  // namespace detail

// Decoder side, at the same points (`stage` as for the encoder): follow the picture's payload at the stage
// the stream's header names (`extension`: the PPS's slice_segment_header_extension_present_flag; `inter` as
// for the encoder).
template <typename Pel>
inline bool filterLumaDecoder(Pel *luma, int stride, int width, int height, int bitDepth, int qp, int block, int poc,
                              bool inter, bool extension, bool stage, std::string &error) {
  codecnn_signal::Stream &stream = detail::decoderStream();
  std::vector<unsigned char> payload;
  std::map<int, std::vector<unsigned char>>::iterator it = payloads().find(poc);
  static const std::vector<unsigned char> none;
  if (stage != codecnn_signal::placedBeforeSao(it != payloads().end() ? it->second : none, stream)) return true;
  if (it != payloads().end()) {
    payload.swap(it->second);
    payloads().erase(it);
  }
  if (!detail::modelsReady(error)) return false;
  const Loaded &m = loaded();
  if (!extension) {
    if (!m.active) return true;
    error =
        "this bitstream carries no codecnn signalling: it was coded without a codecnn filter (or by an "
        "hm_bridge before signalling version 1); drop --CnnModel";
    return false;
  }
  if (!m.active) {
    if (payload.empty()) return true;
    error = "this bitstream was coded with a codecnn filter: give the encoder's --CnnModel";
    return false;
  }
  codecnn_signal::Choice c;
  if (!codecnn_signal::parse(payload, width, height, block, detail::modelId(), stream, c, error)) return false;
  static bool told = false;  // (the load line names the encoder's option, which a decoder does not have)
  if (stream.beforeSao && !told) std::fprintf(stdout, "codecnn: this bitstream's filter runs before SAO\n");
  told = told || stream.beforeSao;
  if (!c.on) return true;
  if (stream.mode == codecnn_signal::kAlwaysOn)
    return filterLuma(luma, stride, width, height, bitDepth, qp, error, inter);
  std::vector<Pel> filtered;
  if (!detail::filterCopy(luma, stride, width, height, bitDepth, codecnn_signal::qpFor(qp, c.qpIndex), inter, filtered,
                          error))
    return false;
  codecnn_signal::apply(luma, stride, filtered, width, height, bitDepth, block, c);
  return true;
}

}  // namespace codecnn_hm

#endif  // CODECNN_HM_H
