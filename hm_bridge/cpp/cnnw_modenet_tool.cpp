// cnnw_modenet_tool -- runs a mode network (cnnw_modenet.h) outside HM, for the tests and the benchmark.
//   cnnw_modenet_tool run MODEL IN.f32 N QP COUNT OUT.f32   COUNT canvases (3 x (2N+1)^2 floats) -> 35 logits each
//   cnnw_modenet_tool runint MODEL IN.i32 N QP BITDEPTH COUNT OUT.i16   an int16 model: COUNT integer canvases
//                                                         (3 x (2N+1)^2 int32 samples) -> 35 int16 logits each
//   cnnw_modenet_tool bench MODEL N REPS                   "N wall_us cpu_us macs" per N x N block, one thread
//   cnnw_modenet_tool check MODEL                          loads it: its CRC-32, or the error (exit 1)
//   cnnw_modenet_tool checks FILE...                       per file one line: "OK" after running it on a block of
//                                                         each size, or why it is refused (for the ASan tests)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "cnnw_modenet.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: cnnw_modenet_tool run|bench|check MODEL ...\n");
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "checks") {
    for (int i = 2; i < argc; ++i) {
      cnnw::ModeNet m;
      cnnw::Status ls = m.load(argv[i]);
      if (!ls.ok) {
        std::printf("%s\n", ls.message.c_str());
        continue;
      }
      cnnw::ModeNet::Scratch sc;
      float out[35];
      int16_t iout[35];
      for (int n = 4; n <= 32 && ls.ok; n *= 2) {
        const size_t size = static_cast<size_t>(3) * (2 * n + 1) * (2 * n + 1);
        std::vector<float> canvas(size, 0.5f);
        std::vector<int32_t> icanvas(size, 1);
        ls = m.isInt16() ? m.runInt(&icanvas[0], n, 32, 8, iout, sc) : m.run(&canvas[0], n, 32, out, sc);
      }
      std::printf("%s\n", ls.ok ? "OK" : ls.message.c_str());
    }
    return 0;
  }
  cnnw::ModeNet net;
  cnnw::Status st = net.load(argv[2]);
  if (!st.ok) {
    std::fprintf(stderr, "%s\n", st.message.c_str());
    return 1;
  }
  cnnw::ModeNet::Scratch scratch;
  if (cmd == "check") {
    std::printf("CRC-32 %s\n", net.checksumHex().c_str());
    return 0;
  }
  if (cmd == "run" && argc == 8) {
    const int n = std::atoi(argv[4]), qp = std::atoi(argv[5]), count = std::atoi(argv[6]);
    const size_t size = static_cast<size_t>(3) * (2 * n + 1) * (2 * n + 1);
    std::vector<float> in(size * count), out(35 * static_cast<size_t>(count));
    FILE *f = std::fopen(argv[3], "rb");
    if (!f || std::fread(&in[0], sizeof(float), in.size(), f) != in.size()) return 3;
    std::fclose(f);
    for (int i = 0; i < count; ++i) {
      st = net.run(&in[size * i], n, qp, &out[35 * static_cast<size_t>(i)], scratch);
      if (!st.ok) {
        std::fprintf(stderr, "%s\n", st.message.c_str());
        return 1;
      }
    }
    f = std::fopen(argv[7], "wb");
    if (!f || std::fwrite(&out[0], sizeof(float), out.size(), f) != out.size()) return 3;
    std::fclose(f);
    return 0;
  }
  if (cmd == "runint" && argc == 9) {
    const int n = std::atoi(argv[4]), qp = std::atoi(argv[5]), bitDepth = std::atoi(argv[6]),
              count = std::atoi(argv[7]);
    const size_t size = static_cast<size_t>(3) * (2 * n + 1) * (2 * n + 1);
    std::vector<int32_t> in(size * count);
    std::vector<int16_t> out(35 * static_cast<size_t>(count));
    FILE *f = std::fopen(argv[3], "rb");
    if (!f || std::fread(&in[0], sizeof(int32_t), in.size(), f) != in.size()) return 3;
    std::fclose(f);
    for (int i = 0; i < count; ++i) {
      st = net.runInt(&in[size * i], n, qp, bitDepth, &out[35 * static_cast<size_t>(i)], scratch);
      if (!st.ok) {
        std::fprintf(stderr, "%s\n", st.message.c_str());
        return 1;
      }
    }
    f = std::fopen(argv[8], "wb");
    if (!f || std::fwrite(&out[0], sizeof(int16_t), out.size(), f) != out.size()) return 3;
    std::fclose(f);
    return 0;
  }
  if (cmd == "bench" && argc == 5) {
    const int n = std::atoi(argv[3]), reps = std::atoi(argv[4]), side = 2 * n + 1, plane = side * side;
    const int variants = 64;
    std::vector<float> canvases(static_cast<size_t>(variants) * 3 * plane, 0.0f);
    std::vector<int32_t> icanvases(canvases.size(), 0);  // the same 8-bit samples, for int16 models
    unsigned seed = 12345u;
    for (int v = 0; v < variants; ++v) {
      float *c = &canvases[static_cast<size_t>(v) * 3 * plane];
      int32_t *ic = &icanvases[static_cast<size_t>(v) * 3 * plane];
      for (int y = 0; y < side; ++y)
        for (int x = 0; x < side; ++x) {
          seed = seed * 1664525u + 1013904223u;
          const int32_t sample = static_cast<int32_t>(seed >> 24);
          const float s = static_cast<float>(sample) / 255.0f;
          if (y >= 1 && y <= n && x >= 1 && x <= n) c[y * side + x] = s, ic[y * side + x] = sample;
          if (y == 0 || x == 0) {
            c[plane + y * side + x] = s, c[2 * plane + y * side + x] = 1.0f;
            ic[plane + y * side + x] = sample, ic[2 * plane + y * side + x] = 1;
          }
        }
    }
    float logits[35], sink = 0.0f;
    int16_t ilogits[35];
    const bool fixed = net.isInt16();
    for (int i = 0; i < variants; ++i) {
      const size_t at = static_cast<size_t>(i % variants) * 3 * plane;
      if (fixed)
        net.runInt(&icanvases[at], n, 32, 8, ilogits, scratch);
      else
        net.run(&canvases[at], n, 32, logits, scratch);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    for (int i = 0; i < reps; ++i) {
      const size_t at = static_cast<size_t>(i % variants) * 3 * plane;
      if (fixed) {
        net.runInt(&icanvases[at], n, 32, 8, ilogits, scratch);
        sink += ilogits[i % 35];
      } else {
        net.run(&canvases[at], n, 32, logits, scratch);
        sink += logits[i % 35];
      }
    }
    const double cpu = 1e6 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC / reps;
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
    // N, wall us per block, CPU us per block (the process's: excludes time the scheduler gave others), MACs
    std::printf("%d %.3f %.3f %ld%s\n", n, us, cpu, net.macs(n), sink == 12345.0f ? " " : "");
    return 0;
  }
  std::fprintf(stderr, "usage: cnnw_modenet_tool run|bench|check MODEL ...\n");
  return 2;
}
