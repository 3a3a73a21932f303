// cnnw_tool: filter the luma of a raw YUV 4:2:0 file with a .cnnw model (standalone use of cnnw.h).
//   cnnw_tool [--threads N] [--profile] MODEL.cnnw IN.yuv WIDTH HEIGHT BITDEPTH QP OUT_LUMA.raw [FLOAT_OUT.f32]
// Reads every frame (8-bit: bytes; above: 16-bit little-endian), writes the filtered luma planes in the
// same sample format, and optionally the unrounded float outputs (float32, [0, 1] units) for checks.
// --threads N: the CTUs of each frame shared out among N threads (default 1); the output is the same.
// --profile: where the time went, on stdout at the end: the clock ("clock cpu": the threads' CPU time; "clock
// wall"), then one line per node of the graph, summed over the frames and threads, "node INDEX OP SECONDS",
// for a convolution followed by "K CIN COUT MACS" (cnnw::NodeTime).
// On stderr: the model's precision, format version and CRC-32 (compare it with the one HM prints), a
// load warning (a version 1 file, without checksum) if any, or the error (a damaged file: exit status 1).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <vector>

#include "cnnw.h"

int main(int argc, char **argv) {
  std::vector<char *> args;  // the positional arguments
  int threads = 1;
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
      if (threads < 1) {
        std::cerr << "error: --threads needs a count of 1 or more\n";
        return 2;
      }
    } else if (std::strcmp(argv[i], "--profile") == 0) {
      profile = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (args.size() < 7) {
    std::cerr << "usage: cnnw_tool [--threads N] [--profile] MODEL.cnnw IN.yuv WIDTH HEIGHT BITDEPTH QP "
                 "OUT_LUMA.raw [FLOAT_OUT.f32]\n";
    return 2;
  }
  const bool floats = args.size() > 7;
  cnnw::Model model;
  cnnw::Status st = model.load(args[0]);
  if (!st.ok) {
    std::cerr << "error: " << st.message << "\n";
    return 1;
  }
  if (!st.message.empty()) std::cerr << st.message << "\n";  // a warning: loaded anyway
  std::cerr << "model " << args[0] << ": " << (model.isInt16() ? "int16" : "float32") << ", .cnnw version "
            << model.version() << ", CRC-32 " << (model.hasChecksum() ? model.checksumHex() : "none") << "\n";
  const int w = std::atoi(args[2]), h = std::atoi(args[3]), bd = std::atoi(args[4]), qp = std::atoi(args[5]);
  const int bytes = bd > 8 ? 2 : 1;
  std::ifstream in(args[1], std::ios::binary);
  std::ofstream out(args[6], std::ios::binary);
  std::ofstream fout;
  if (floats) fout.open(args[7], std::ios::binary);
  const size_t frame = static_cast<size_t>(w) * h * 3 / 2 * bytes;
  std::vector<unsigned char> buf(frame);
  std::vector<uint16_t> plane(static_cast<size_t>(w) * h), res(plane.size());
  std::vector<float> fl;
  std::vector<cnnw::NodeTime> times;
  while (in.read(reinterpret_cast<char *>(&buf[0]), frame)) {
    for (size_t i = 0; i < plane.size(); ++i)
      plane[i] = bytes == 1 ? buf[i] : static_cast<uint16_t>(buf[2 * i] | (buf[2 * i + 1] << 8));
    st = model.filterPlane(&plane[0], w, &res[0], w, w, h, bd, qp, 128, floats ? &fl : nullptr, threads,
                           profile ? &times : nullptr);
    if (!st.ok) {
      std::cerr << "error: " << st.message << "\n";
      return 1;
    }
    for (size_t i = 0; i < res.size(); ++i) {
      unsigned char b[2] = {static_cast<unsigned char>(res[i] & 255), static_cast<unsigned char>(res[i] >> 8)};
      out.write(reinterpret_cast<char *>(b), bytes);
    }
    if (floats) fout.write(reinterpret_cast<const char *>(&fl[0]), fl.size() * sizeof(float));
  }
  static const char *const ops[cnnw::OP_COUNT] = {"input", "qp_plane", "concat", "conv2d", "relu", "add", "crop"};
  if (profile) std::printf("clock %s\n", cnnw::kProfileCpuTime ? "cpu" : "wall");
  for (size_t i = 0; i < times.size(); ++i) {
    const cnnw::NodeTime &t = times[i];
    std::printf("node %u %s %.6f", static_cast<unsigned>(i), t.op < cnnw::OP_COUNT ? ops[t.op] : "?", t.seconds);
    if (t.op == cnnw::OP_CONV2D)
      std::printf(" %d %d %d %llu", t.k, t.cin, t.cout, static_cast<unsigned long long>(t.macs));
    std::printf("\n");
  }
  return 0;
}
