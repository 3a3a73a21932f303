// cnnw.h -- dependency-free C++11 inference of codecnn networks exported as .cnnw files.
//
// The file format and the op enum are specified in hm_bridge/format.py; this reader mirrors it
// (keep the two in step: enum Op in cnnw_format.h == INPUT..HEADS there, same field order). The container
// (constants, Status, Tensor, CRC-32, JSON header, byte reader) is in cnnw_format.h, shared with the mode
// network's reader cnnw_modenet.h; a mode network's file (version 3) is refused here as such. The int16 variant
// (precision 1) follows the integer rules of hm_bridge/fixed.py exactly: its output equals that
// Python twin sample for sample.
//
// Use (e.g. from HM after SAO, on the luma plane of a TComPicYuv):
//   cnnw::Model model;
//   cnnw::Status st = model.load("model.cnnw");
//   if (!st.ok) { /* st.message says why */ }
//   if (!st.message.empty()) { /* loaded, with a warning to print (a version 1 file) */ }
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp);
//   // or with 4 threads, CTUs shared out among them (the same output samples as with one):
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp, 128, nullptr, 4);
//
// Integrity: a version 2 file carries a CRC-32 (zlib's, as Python's zlib.crc32) of every byte after the
// checksum field (file offset 12 to the end: header, tensors, nodes). load() verifies it before reading
// anything else and refuses a mismatch ("the file is damaged ..."), so flipped bits in the weights never
// filter. checksum() gives it (HM's glue prints it at load, so encoder and decoder logs can be compared).
// Version 1 files (no checksum field) still load, with a warning in the returned Status's message.
//
// Every count, dimension, index and length read from a file is checked before use: a damaged or
// truncated file gives a Status with a message, never a crash or an out-of-bounds read. Nothing aborts.
//
// Speed: activations are planar with a zero margin around every plane (the convolutions' zero padding,
// so no padded copies and no bounds in the inner loops); int16 channels are stored in interleaved pairs
// (the operand layout of _mm256_madd_epi16 / vpdpwssd). The vector convolution computes CO output
// channels x P vectors of pixels of one output row in registers, weights pre-packed at load time.
// Threads: filterPlane's last argument shares the CTUs out among std::threads; every CTU is computed by
// the same code whichever thread runs it, so the output does not depend on the thread count (int16 and
// float alike). std::thread needs no link flag with glibc >= 2.34; older systems link with -pthread.
#ifndef CNNW_H
#define CNNW_H

#include <time.h>  // clock_gettime and CLOCK_THREAD_CPUTIME_ID where the platform has them (POSIX)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cnnw_format.h"

// Vector kernels for x86: AVX-512 (F, BW; VNNI used when present) or AVX2 with FMA, chosen by the
// compiler flags (-march=native, or -mavx2 -mfma); every other target, or CNNW_NO_SIMD defined, uses the
// portable loops. All give the same int16 output (integer accumulation wraps modulo 2^32, so its order
// does not matter); the float paths differ by rounding only.
#if !defined(CNNW_NO_SIMD) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__FMA__)
#define CNNW_AVX512 1
#define CNNW_SIMD 1
#include <immintrin.h>
#elif !defined(CNNW_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define CNNW_AVX2 1
#define CNNW_SIMD 1
#include <immintrin.h>
#endif

namespace cnnw {

// Spare positions after the last plane of a buffer: the vector loads of a row's last block of pixels
// may run past the end of the row (into lanes that are computed but never stored).
static const int kSlack = 128;

// A C x H x W buffer of samples T, as SADL's Tensor<T>: float (float32 models) or int16_t (int16 models,
// where q is the power-of-two scale of the samples: value = sample / 2^q; float buffers keep q = 0).
// Every plane has a zero margin of m samples on each side (the convolutions' zero padding, read in place).
// int16 channels are stored in interleaved pairs (G = 2: sample (c, y, x) of an even and an odd channel
// side by side; an odd count ends with a zero channel); float channels one plane each (G = 1).
template <typename T>
struct Buf {
  enum { G = sizeof(T) == 2 ? 2 : 1 };
  int c, h, w, q, m;
  std::vector<T> v;
  Buf() : c(0), h(0), w(0), q(0), m(0) {}
  int rowStride() const { return w + 2 * m; }                                         // positions
  size_t planeSize() const { return static_cast<size_t>(h + 2 * m) * rowStride(); }   // positions
  int planes() const { return (c + G - 1) / G; }                                      // channel groups
  size_t storage() const { return static_cast<size_t>(planes()) * planeSize() * G; }  // samples
  // The index of sample (ch, y, x); y and x may lie in the margin (-m .. h + m - 1).
  size_t at(int ch, int y, int x) const {
    return ((ch / G) * planeSize() + static_cast<size_t>(y + m) * rowStride() + (x + m)) * G + ch % G;
  }
  // New dimensions on the storage it holds (a recycled vector): contents unspecified; every op either
  // writes all of it or calls clearMargins() and writes the inside.
  void reshape(int c_, int h_, int w_, int m_) {
    c = c_, h = h_, w = w_, m = m_;
    v.resize(storage() + static_cast<size_t>(kSlack) * G);
  }
  // Zeroes the margins of every plane, the padding channel of an odd int16 count, and the slack.
  void clearMargins() {
    const size_t ps = planeSize() * G, rs = static_cast<size_t>(rowStride()) * G, mg = static_cast<size_t>(m) * G;
    for (int p = 0; p < planes(); ++p) {
      T *b = &v[p * ps];
      std::fill(b, b + mg * rowStride(), T());
      std::fill(b + (h + m) * rs, b + ps, T());
      for (int y = 0; y < h; ++y) {
        T *r = b + (y + m) * rs;
        std::fill(r, r + mg, T());
        std::fill(r + mg + static_cast<size_t>(w) * G, r + rs, T());
      }
    }
    if (G == 2 && c % 2) {
      T *b = &v[(planes() - 1) * ps];
      for (size_t i = 1; i < ps; i += 2) b[i] = T();
    }
    std::fill(v.begin() + storage(), v.end(), T());
  }
};
typedef Buf<float> Buffer;     // float32 models
typedef Buf<int16_t> IBuffer;  // int16 models

// The integer helpers of hm_bridge/fixed.py (floorShift, shiftRound, sat16) are in cnnw_format.h.

// Where the time goes (filterPlane's last argument; cnnw_tool --profile): per node of the graph (entry i:
// node i), the seconds spent in it, summed over tiles and threads, and for a convolution its shape and the
// multiply-accumulates it did (biases not counted; as codecnn.models.complexity counts them). The seconds
// are the running thread's CPU time (profileClock()) where the platform has such a clock (POSIX), so time
// the scheduler gives to other processes does not count; elsewhere steady_clock's wall time.
#ifdef CLOCK_THREAD_CPUTIME_ID
static const bool kProfileCpuTime = true;
inline double profileClock() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
#else
static const bool kProfileCpuTime = false;
inline double profileClock() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#endif

struct NodeTime {
  uint32_t op;
  int cin, cout, k;  // convolutions: input channels (per group), output channels, kernel size
  uint64_t macs;
  double seconds;
  NodeTime() : op(0), cin(0), cout(0), k(0), macs(0), seconds(0) {}
};

#ifdef CNNW_SIMD
// The vector kernels. S (VecF, VecI below) gives the instruction set: N pixels per vector, P vectors of
// pixels per block, CO the most output channels per block (CO x P accumulators stay in registers).
namespace simd {
#ifdef CNNW_AVX512
struct VecF {
  typedef __m512 V;
  typedef float T;  // a sample
  typedef float W;  // a weight or bias
  enum { N = 16, P = 4, CO = 6, E = 1 };
  static V load(const float *p) { return _mm512_loadu_ps(p); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mac(V acc, V x, V w) { return fma(w, x, acc); }
  static void store(float *p, V v, int n) {  // the first n lanes (n >= 1)
    if (n >= N)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
};
struct VecI {  // 32-bit lanes: a pixel's pair of int16 channels in, its int32 sum out
  typedef __m512i V;
  typedef int16_t T;
  typedef int32_t W;  // a pair of int16 weights, or a bias
  enum { N = 16, P = 4, CO = 6, E = 2 };
  static V load(const int16_t *p) { return _mm512_loadu_si512(p); }
  static V set1(int32_t v) { return _mm512_set1_epi32(v); }
  static V dot(V acc, V a, V b) {  // acc + a.lo b.lo + a.hi b.hi, every sum modulo 2^32
#ifdef __AVX512VNNI__
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
  }
  static V mac(V acc, V x, V w) { return dot(acc, x, w); }
  // (the zero-masked forms: GCC 12's plain ones trip -Wmaybe-uninitialized on their undefined operand)
  static V sra(V v, int s) { return _mm512_maskz_sra_epi32(0xFFFF, v, _mm_cvtsi32_si128(s)); }
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V band(V a, V b) { return _mm512_and_si512(a, b); }
  static V bor(V a, V b) { return _mm512_or_si512(a, b); }
  static V shl16(V v) { return _mm512_maskz_slli_epi32(0xFFFF, v, 16); }
  static V clamp(V v, V lo, V hi) { return _mm512_maskz_min_epi32(0xFFFF, _mm512_maskz_max_epi32(0xFFFF, v, lo), hi); }
  static void store(int16_t *p, V v, int n) {  // the first n lanes (pairs of int16)
    if (n >= N)
      _mm512_storeu_si512(p, v);
    else
      _mm512_mask_storeu_epi32(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static void storeAll(int32_t *p, V v) { _mm512_storeu_si512(p, v); }
};
#else
inline __m256i firstLanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
struct VecF {
  typedef __m256 V;
  typedef float T;
  typedef float W;
  enum { N = 8, P = 2, CO = 6, E = 1 };
  static V load(const float *p) { return _mm256_loadu_ps(p); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mac(V acc, V x, V w) { return fma(w, x, acc); }
  static void store(float *p, V v, int n) {
    if (n >= N)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, firstLanes(n), v);
  }
};
struct VecI {
  typedef __m256i V;
  typedef int16_t T;
  typedef int32_t W;
  enum { N = 8, P = 2, CO = 4, E = 2 };
  static V load(const int16_t *p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
  static V set1(int32_t v) { return _mm256_set1_epi32(v); }
  static V dot(V acc, V a, V b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static V mac(V acc, V x, V w) { return dot(acc, x, w); }
  static V sra(V v, int s) { return _mm256_sra_epi32(v, _mm_cvtsi32_si128(s)); }
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V band(V a, V b) { return _mm256_and_si256(a, b); }
  static V bor(V a, V b) { return _mm256_or_si256(a, b); }
  static V shl16(V v) { return _mm256_slli_epi32(v, 16); }
  static V clamp(V v, V lo, V hi) { return _mm256_min_epi32(_mm256_max_epi32(v, lo), hi); }
  static void store(int16_t *p, V v, int n) {
    if (n >= N)
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v);
    else
      _mm256_maskstore_epi32(reinterpret_cast<int *>(p), firstLanes(n), v);
  }
  static void storeAll(int32_t *p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), v); }
};
#endif

// The loop that follows unrolled completely (GCC >= 8 and clang read "GCC unroll"), so that every index
// into the block's accumulator array is a constant: only then do compilers keep the array in registers.
#if (defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 8)
#define CNNW_UNROLL _Pragma("GCC unroll 16")
#else
#define CNNW_UNROLL
#endif

// The sums of one block: CO output channels x P vectors of pixels of one output row, each the bias plus the
// products over all input groups and taps, in registers. A group is one channel (VecF) or an interleaved
// pair of int16 channels (VecI: E = 2 samples per pixel, one dot takes both). src: group 0 at the block's
// first tap (margins hold the zero padding); groups cstride apart, rows rs apart, in samples. w:
// [group][ky][kx][CO]. The sums build up in a local array that only constant indices reach (the loops over
// j unrolled by CNNW_UNROLL, those over p short enough to be unrolled anyway) and go to acc at the end, where
// the epilogues index it with loop variables. Summed in acc itself, they stayed in memory, loaded and stored
// around every tap (g++ 12 and clang 22): scripts/bench_bridge.py measured the int16 3x3 convolutions of
// zoo:rdn-inloop-ai-v2 at 0.75 of one core's int16 MAC peak then, 0.95 now (g++ 12, AVX-512 VNNI).
template <class S, int K, int CO>
inline void accumulate(typename S::V (&acc)[CO][S::P], const typename S::T *src, size_t cstride, ptrdiff_t rs,
                       int groups, int kr, const typename S::W *w, const typename S::W *b) {
  const int k = K ? K : kr;
  typename S::V sum[CO][S::P];
  CNNW_UNROLL
  for (int j = 0; j < CO; ++j) {
    const typename S::V bv = S::set1(b[j]);
    for (int p = 0; p < S::P; ++p) sum[j][p] = bv;
  }
  for (int c = 0; c < groups; ++c, src += cstride)
    for (int ky = 0; ky < k; ++ky)
      for (int kx = 0; kx < k; ++kx, w += CO) {
        const typename S::T *s = src + ky * rs + S::E * kx;
        typename S::V x[S::P];
        for (int p = 0; p < S::P; ++p) x[p] = S::load(s + p * S::E * S::N);
        for (int j = 0; j < CO; ++j) {
          const typename S::V wv = S::set1(w[j]);
          for (int p = 0; p < S::P; ++p) sum[j][p] = S::mac(sum[j][p], x[p], wv);
        }
      }
  CNNW_UNROLL
  for (int j = 0; j < CO; ++j)
    for (int p = 0; p < S::P; ++p) acc[j][p] = sum[j][p];
}

// One block of a float convolution (see accumulate). dst: output channel j at dst + j * ostride; n of the
// block's pixels are stored (the rest lie past the row's end).
template <int K, int CO>
void convBlockF(const float *src, size_t cstride, ptrdiff_t rs, int cin, int kr, const float *w, const float *b,
                float *dst, size_t ostride, int n) {
  typedef VecF S;
  S::V acc[CO][S::P];
  accumulate<S, K, CO>(acc, src, cstride, rs, cin, kr, w, b);
  for (int j = 0; j < CO; ++j)
    for (int p = 0; p < S::P && p * S::N < n; ++p) S::store(dst + j * ostride + p * S::N, acc[j][p], n - p * S::N);
}

// One block of an int16 convolution (see accumulate): the dots (vpdpwssd, or _mm256_madd_epi16 and an add)
// take the input channels in interleaved pairs, the weights as (w_even, w_odd) int16 pairs. CO is even:
// output channels j and j + 1 are rescaled (round-half-up shift, exact in 32 bits for 1 <= shift <= 31),
// saturated to int16 and stored as one interleaved pair. Offsets in int16 samples.
template <int K, int CO>
void convBlockI(const int16_t *src, size_t cstride, ptrdiff_t rs, int pairs, int kr, const int32_t *w, const int32_t *b,
                int shift, int16_t *dst, size_t ostride, int n) {
  typedef VecI S;
  S::V acc[CO][S::P];
  accumulate<S, K, CO>(acc, src, cstride, rs, pairs, kr, w, b);
  const S::V lo = S::set1(-32768), hi = S::set1(32767), low16 = S::set1(0xFFFF), one = S::set1(1);
  for (int j = 0; j < CO; j += 2)
    for (int p = 0; p < S::P && p * S::N < n; ++p) {
      S::V a = acc[j][p], c = acc[j + 1][p];
      if (shift >= 1 && shift <= 31) {  // (v + 2^(s-1)) >> s == (v >> s) + bit s-1 of v
        a = S::add(S::sra(a, shift), S::band(S::sra(a, shift - 1), one));
        c = S::add(S::sra(c, shift), S::band(S::sra(c, shift - 1), one));
      } else {  // the scalar rule (int64) for other shifts
        int32_t ta[S::N], tc[S::N];
        S::storeAll(ta, a), S::storeAll(tc, c);
        for (int i = 0; i < S::N; ++i) {
          ta[i] = sat16(shiftRound(ta[i], shift));
          tc[i] = sat16(shiftRound(tc[i], shift));
        }
        a = S::load(reinterpret_cast<const int16_t *>(ta)), c = S::load(reinterpret_cast<const int16_t *>(tc));
      }
      a = S::clamp(a, lo, hi), c = S::clamp(c, lo, hi);
      S::store(dst + (j / 2) * ostride + p * 2 * S::N, S::bor(S::band(a, low16), S::shl16(c)), n - p * S::N);
    }
}

typedef void (*KernelF)(const float *, size_t, ptrdiff_t, int, int, const float *, const float *, float *, size_t, int);
typedef void (*KernelI)(const int16_t *, size_t, ptrdiff_t, int, int, const int32_t *, const int32_t *, int, int16_t *,
                        size_t, int);

template <int K>
KernelF kernelF(int co) {
  switch (co) {
    case 1:
      return &convBlockF<K, 1>;
    case 2:
      return &convBlockF<K, 2>;
    case 3:
      return &convBlockF<K, 3>;
    case 4:
      return &convBlockF<K, 4>;
    case 5:
      return &convBlockF<K, 5>;
    default:
      return &convBlockF<K, 6>;
  }
}

template <int K>
KernelI kernelI(int co) {
  switch (co) {
    case 2:
      return &convBlockI<K, 2>;
    case 4:
      return &convBlockI<K, 4>;
    default:
      return &convBlockI<K, VecI::CO>;
  }
}
}  // namespace simd
#endif

class Model {
 public:
  Model() : context_(0), margin_(0), precision_(kFloat32), version_(0), checksum_(0) {}
  bool isInt16() const { return precision_ == kInt16; }

  int context() const { return context_; }
  const std::string &header() const { return header_; }
  // The loaded file's format version, and its CRC-32 (hasChecksum(): false for a version 1 file, whose
  // checksum() is 0). Print it to check that an encoder and a decoder run the same weights.
  uint32_t version() const { return version_; }
  bool hasChecksum() const { return version_ >= 2; }
  uint32_t checksum() const { return checksum_; }
  // The checksum as tools print it (and as Python's f"{crc:#010x}"), e.g. "0x1a2b3c4d".
  std::string checksumHex() const { return hex(checksum_); }

  // Loads a .cnnw file. Not ok: the message names the file and says why (e.g. "PATH: the file is damaged
  // ..."). Ok with a non-empty message: loaded, with a warning naming the file for the caller to print.
  Status load(const std::string &path) {
    std::ifstream f(path.c_str(), std::ios::binary);
    if (!f) return Status::bad(path + ": cannot open the model file");
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    Status st = loadFromMemory(data.empty() ? nullptr : &data[0], data.size());
    if (!st.message.empty()) st.message = path + ": " + st.message;
    return st;
  }

  // As load(), from bytes in memory; on failure the model is left empty (nothing runs).
  Status loadFromMemory(const uint8_t *data, size_t size) {
    Status st = parse(data, size);
    if (!st.ok) {
      tensors_.clear();
      nodes_.clear();
      lastUse_.clear();
      plans_.clear();
      header_.clear();
      version_ = checksum_ = 0;
    }
    return st;
  }

 private:
  Status parse(const uint8_t *data, size_t size) {
    tensors_.clear();
    nodes_.clear();
    version_ = checksum_ = 0;
    static const uint8_t empty = 0;
    Reader r(data ? data : &empty, data ? size : 0);
    const uint8_t *magic;
    if (!r.bytes(4, magic) || std::memcmp(magic, "CNNW", 4) != 0) return Status::bad("not a .cnnw file (bad magic)");
    uint32_t version, precision, hlen;
    if (!r.u32(version)) return Status::bad("truncated header");
    if (version == kModesVersion)
      return Status::bad("a mode network (.cnnw version 3, for the encoder's intra mode search), not a luma filter");
    if (version != kVersion && version != kLegacyVersion)
      return Status::bad("unsupported .cnnw version " + num(version) + " (this reader knows versions 1 and 2)");
    uint32_t stored = 0;
    if (version >= 2) {  // the checksum before anything else: a damaged file is refused as such
      if (!r.u32(stored)) return Status::bad("truncated header");
      const uint32_t actual = crc32(data + kCheckedFrom, r.remaining());
      if (actual != stored)
        return Status::bad("the file is damaged: its CRC-32 is " + hex(actual) + " but " + hex(stored) +
                           " was written with it (altered or truncated after export); export the model again or "
                           "copy it again");
    }
    if (!r.u32(precision) || !r.u32(hlen)) return Status::bad("truncated header");
    if (precision != kFloat32 && precision != kInt16) return Status::bad("unsupported precision " + num(precision));
    precision_ = precision;
    const uint8_t *h;
    if (hlen > kMaxHeader || !r.bytes(hlen, h)) return Status::bad("truncated or oversized JSON header");
    header_.assign(reinterpret_cast<const char *>(h), hlen);
    std::string arch;
    if (!headerInt("context", context_) || context_ < 0 || context_ > 64) return Status::bad("header lacks a context");
    if (!headerString("arch", arch) || arch != "rdn") return Status::bad("unknown architecture in header");
    uint32_t nt;
    if (!r.u32(nt) || nt > kMaxNodes) return Status::bad("bad tensor count");
    for (uint32_t t = 0; t < nt; ++t) {
      Tensor ten;
      Status st = readTensor(r, precision_, t, ten);
      if (!st.ok) return st;
      tensors_.push_back(ten);
    }
    uint32_t nn;
    if (!r.u32(nn) || nn < 2 || nn > kMaxNodes) return Status::bad("bad node count");
    for (uint32_t i = 0; i < nn; ++i) {
      Node n;
      uint32_t ni, np;
      if (!r.u32(n.op) || n.op >= OP_COUNT) return Status::bad("node " + num(i) + ": unknown op");
      if (!r.u32(ni) || ni > i || ni > kMaxNodes) return Status::bad("node " + num(i) + ": bad input count");
      for (uint32_t k = 0; k < ni; ++k) {
        uint32_t in;
        if (!r.u32(in) || in >= i) return Status::bad("node " + num(i) + ": input is not an earlier node");
        n.inputs.push_back(in);
      }
      if (!r.u32(np) || np > kMaxParams) return Status::bad("node " + num(i) + ": bad parameter count");
      for (uint32_t k = 0; k < np; ++k) {
        int32_t v;
        if (!r.i32(v)) return Status::bad("truncated node parameters");
        n.params.push_back(v);
      }
      Status st = infer(i, n);
      if (!st.ok) return st;
      nodes_.push_back(n);
    }
    if (nodes_[0].op != OP_INPUT) return Status::bad("node 0 is not the input");
    if (nodes_.back().channels != 1) return Status::bad("the last node is not a 1-channel residual");
    if (r.remaining() != 0) return Status::bad("trailing bytes after the last node");
    lastUse_.assign(nodes_.size(), 0);
    for (size_t i = 0; i < nodes_.size(); ++i)
      for (size_t k = 0; k < nodes_[i].inputs.size(); ++k) lastUse_[nodes_[i].inputs[k]] = i;
    margin_ = 0;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].op == OP_CONV2D) margin_ = std::max(margin_, static_cast<int>(nodes_[i].params[2]));
    buildPlans();
    version_ = version;
    checksum_ = stored;
    if (version == kLegacyVersion)
      return Status{true,
                    "warning: .cnnw version 1 has no checksum, so damage to its weights cannot be detected; "
                    "re-export it (codecnn export) to write version 2"};
    return Status::good();
  }

 public:
  // Concat and crop move samples only: one implementation for float and int16 buffers (runGraph checks
  // and sets the scales).
  template <typename T>
  static Status concatInto(const std::vector<Buf<T>> &vals, const Node &n, Buf<T> &out) {
    int c = 0;
    bool whole = true;  // every input but the last fills whole channel groups: the planes are copied as they are
    const Buf<T> &a0 = vals[n.inputs[0]];
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Buf<T> &a = vals[n.inputs[k]];
      if (a.h != a0.h || a.w != a0.w || a.m != a0.m) return Status::bad("concat of different sizes");
      if (k + 1 < n.inputs.size() && a.c % Buf<T>::G) whole = false;
      c += a.c;
    }
    out.reshape(c, a0.h, a0.w, a0.m);
    if (whole) {
      size_t off = 0;
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const Buf<T> &a = vals[n.inputs[k]];
        std::copy(a.v.begin(), a.v.begin() + a.storage(), out.v.begin() + off);
        off += a.storage();
      }
      std::fill(out.v.begin() + off, out.v.end(), T());
      return Status::good();
    }
    std::fill(out.v.begin(), out.v.end(), T());  // int16 channels of odd counts: one channel at a time
    int ch = 0;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Buf<T> &a = vals[n.inputs[k]];
      for (int j = 0; j < a.c; ++j, ++ch)
        for (int y = 0; y < a.h; ++y)
          for (int x = 0; x < a.w; ++x) out.v[out.at(ch, y, x)] = a.v[a.at(j, y, x)];
    }
    return Status::good();
  }

  template <typename T>
  static Status cropInto(const Buf<T> &a, int k, Buf<T> &out) {
    if (k < 0 || a.h <= 2 * k || a.w <= 2 * k) return Status::bad("crop larger than the tile");
    out.reshape(a.c, a.h - 2 * k, a.w - 2 * k, a.m);
    out.clearMargins();
    for (int p = 0; p < a.planes(); ++p)
      for (int y = 0; y < out.h; ++y) {
        const T *s = &a.v[a.at(p * Buf<T>::G, y + k, k)];
        std::copy(s, s + static_cast<size_t>(out.w) * Buf<T>::G, &out.v[out.at(p * Buf<T>::G, y, 0)]);
      }
    return Status::good();
  }

  // out = the first input of node i: moved when node i is its last reader and reads it only once (no
  // copy), else copied. The input tile (node 0) is never moved: the int16 path reads it again at the end.
  template <typename T>
  void takeOrCopy(std::vector<Buf<T>> &vals, const Node &n, size_t i, Buf<T> &out) const {
    const uint32_t in = n.inputs[0];
    if (in != 0 && lastUse_[in] == i && std::count(n.inputs.begin(), n.inputs.end(), in) == 1)
      std::swap(out, vals[in]);
    else
      out = vals[in];
  }

  // Runs the graph on one tile (1 x side x side, samples in [0, 1]); residual is (side - 2 context)^2.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual) const {
    std::vector<std::vector<float>> pool;
    return runTile(tile, side, qp, residual, pool);
  }

  // The same, recycling node buffers through ``pool`` (kept by the caller across tiles: no allocation, no
  // zero fill and no page faults after the first tile); ``profile``: the time of every node added to it.
  Status runTile(const float *tile, int side, int qp, std::vector<float> &residual,
                 std::vector<std::vector<float>> &pool, std::vector<NodeTime> *profile = nullptr) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kFloat32) return Status::bad("runTile needs a float32 model; use runTileInt");
    if (side <= 2 * context_) return Status::bad("tile smaller than the context");
    std::vector<Buffer> vals(nodes_.size());
    Buffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side, margin_);
    in.clearMargins();
    for (int y = 0; y < side; ++y)
      std::copy(tile + static_cast<size_t>(y) * side, tile + static_cast<size_t>(y + 1) * side, &in.v[in.at(0, y, 0)]);
    Status st = runGraph(vals, qp, pool, profile);
    const Buffer &res = vals.back();
    const int s = side - 2 * context_;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) {
      residual.resize(static_cast<size_t>(s) * s);
      for (int y = 0; y < s; ++y)
        std::copy(&res.v[res.at(0, y, 0)], &res.v[res.at(0, y, 0)] + s, &residual[static_cast<size_t>(y) * s]);
    }
    release(vals, pool);
    return st;
  }

  // int16 models: runs one tile of integer samples (side x side) and writes the output samples
  // ((side - 2 context)^2, clipped to the bit depth), exactly as hm_bridge/fixed.py run_int_graph.
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples) const {
    std::vector<std::vector<int16_t>> pool;
    return runTileInt(samples, side, bitDepth, qp, outSamples, pool);
  }

  // The same, recycling node buffers through ``pool`` (as runTile), and with ``profile`` as runTile.
  Status runTileInt(const int32_t *samples, int side, int bitDepth, int qp, std::vector<int32_t> &outSamples,
                    std::vector<std::vector<int16_t>> &pool, std::vector<NodeTime> *profile = nullptr) const {
    if (nodes_.empty()) return Status::bad("no model loaded");
    if (precision_ != kInt16) return Status::bad("runTileInt needs an int16 model");
    if (bitDepth < 1 || bitDepth > 16) return Status::bad("bad bit depth");
    if (side <= 2 * context_) return Status::bad("tile smaller than the context");
    const int64_t peak = (static_cast<int64_t>(1) << bitDepth) - 1;
    std::vector<IBuffer> vals(nodes_.size());
    IBuffer &in = vals[0];
    recycle(in, pool);
    in.reshape(1, side, side, margin_);
    in.q = outScale(nodes_[0]);
    in.clearMargins();
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x)
        in.v[in.at(0, y, x)] = sat16(
            (static_cast<int64_t>(samples[static_cast<size_t>(y) * side + x]) * (static_cast<int64_t>(1) << in.q) +
             peak / 2) /
            peak);
    Status st = runGraph(vals, qp, pool, profile);
    const IBuffer &res = vals.back();
    const int c = context_, s = side - 2 * c, qin = in.q;
    if (st.ok && (res.c != 1 || res.h != s || res.w != s))
      st = Status::bad("the network output does not match the tile");
    if (st.ok) {
      outSamples.resize(static_cast<size_t>(s) * s);
      for (int y = 0; y < s; ++y)
        for (int x = 0; x < s; ++x) {
          int64_t v =
              static_cast<int64_t>(in.v[in.at(0, y + c, x + c)]) + shiftRound(res.v[res.at(0, y, x)], res.q - qin);
          int64_t o = floorShift(v * peak + (static_cast<int64_t>(1) << (qin - 1)), qin);
          outSamples[static_cast<size_t>(y) * s + x] = static_cast<int32_t>(o < 0 ? 0 : (o > peak ? peak : o));
        }
    }
    release(vals, pool);
    return st;
  }

  // Filters a luma plane CTU by CTU (context edge-replicated at the picture edges, as codecnn's
  // filter_plane): dst = clip(round((src/peak + residual) * peak)). src and dst may be the same plane.
  // threads > 1: the CTUs are shared out among that many threads (this one included); each CTU is
  // computed exactly as with one thread, so the output is the same. If a thread cannot be started, the
  // others do its share. ``profile`` (optional): the time of every node, added to it (see NodeTime).
  template <typename Pel>
  Status filterPlane(const Pel *src, ptrdiff_t srcStride, Pel *dst, ptrdiff_t dstStride, int width, int height,
                     int bitDepth, int qp, int ctu = 128, std::vector<float> *floatOut = nullptr, int threads = 1,
                     std::vector<NodeTime> *profile = nullptr) const {
    if (width <= 0 || height <= 0 || bitDepth < 1 || bitDepth > 16 || ctu <= 0)
      return Status::bad("bad plane geometry or bit depth");
    if (nodes_.empty()) return Status::bad("no model loaded");
    std::vector<Pel> out(static_cast<size_t>(width) * height);
    if (floatOut) floatOut->assign(static_cast<size_t>(width) * height, 0.f);
    Job<Pel> job(src, srcStride, width, height, bitDepth, qp, ctu, &out[0], floatOut ? &(*floatOut)[0] : nullptr);
    job.profile = profile;
    if (profile) profile->resize(nodes_.size());
    const int workers = std::max(1, std::min(threads, std::min(job.count, 256)));
    std::vector<std::thread> pool;
    for (int t = 1; t < workers; ++t) {
      try {
        pool.push_back(std::thread(&Model::filterCtus<Pel>, this, &job));
      } catch (...) {  // no more threads to be had (or no thread support linked in): fewer do the work
        break;
      }
    }
    filterCtus(&job);
    for (size_t t = 0; t < pool.size(); ++t) pool[t].join();
    if (!job.status.ok) return job.status;
    for (int y = 0; y < height; ++y)
      std::copy(&out[static_cast<size_t>(y) * width], &out[static_cast<size_t>(y) * width] + width,
                dst + y * dstStride);
    return Status::good();
  }

 private:
  // One filterPlane call: the plane, its CTUs (taken in turn by the threads through ``next``), the output,
  // the first error and the profile (if asked for; each thread adds its own to it at the end).
  template <typename Pel>
  struct Job {
    const Pel *src;
    ptrdiff_t stride;
    int width, height, bitDepth, qp, ctu, cols, count;
    Pel *out;
    float *floatOut;
    std::vector<NodeTime> *profile;
    std::atomic<int> next;
    std::atomic<bool> failed;
    std::mutex lock;
    Status status;
    Job(const Pel *s, ptrdiff_t st, int w, int h, int bd, int q, int c, Pel *o, float *fo)
        : src(s),
          stride(st),
          width(w),
          height(h),
          bitDepth(bd),
          qp(q),
          ctu(c),
          cols((w + c - 1) / c),
          count(cols * ((h + c - 1) / c)),
          out(o),
          floatOut(fo),
          profile(nullptr),
          next(0),
          failed(false),
          status(Status::good()) {}
  };

  // A worker of filterPlane: CTUs until there are none left (or one failed), with its own tile and node
  // buffers. Each output sample is written by the thread that computes its CTU, and by no other.
  template <typename Pel>
  void filterCtus(Job<Pel> *job) const {
    const int c = context_, ctu = job->ctu, side = ctu + 2 * c, width = job->width;
    const float peak = static_cast<float>((1 << job->bitDepth) - 1);
    const bool fixed = precision_ == kInt16;
    std::vector<float> tile(fixed ? 0 : static_cast<size_t>(side) * side), res;
    std::vector<int32_t> itile(fixed ? static_cast<size_t>(side) * side : 0), ires;
    std::vector<std::vector<float>> pool;  // node buffers, recycled from tile to tile
    std::vector<std::vector<int16_t>> ipool;
    std::vector<NodeTime> times, *profile = job->profile ? &times : nullptr;
    for (;;) {
      const int i = job->next++;
      if (i >= job->count || job->failed) break;
      const int y0 = (i / job->cols) * ctu, x0 = (i % job->cols) * ctu;
      const int hh = std::min(ctu, job->height - y0), ww = std::min(ctu, width - x0);
      Status st = Status::good();
      if (fixed) {
        fillTile(job->src, job->stride, width, job->height, x0, y0, side, &itile[0], SampleToInt());
        st = runTileInt(&itile[0], side, job->bitDepth, job->qp, ires, ipool, profile);
        if (st.ok)
          for (int y = 0; y < hh; ++y)
            for (int x = 0; x < ww; ++x)
              job->out[static_cast<size_t>(y0 + y) * width + x0 + x] =
                  static_cast<Pel>(ires[static_cast<size_t>(y) * ctu + x]);
      } else {
        fillTile(job->src, job->stride, width, job->height, x0, y0, side, &tile[0], SampleToFloat(peak));
        st = runTile(&tile[0], side, job->qp, res, pool, profile);
        if (st.ok)
          for (int y = 0; y < hh; ++y) {
            for (int x = 0; x < ww; ++x) {
              float v = tile[static_cast<size_t>(y + c) * side + x + c] + res[static_cast<size_t>(y) * ctu + x];
              if (job->floatOut) job->floatOut[static_cast<size_t>(y0 + y) * width + x0 + x] = v;
              v = std::min(std::max(v, 0.f), 1.f) * peak;
              job->out[static_cast<size_t>(y0 + y) * width + x0 + x] = static_cast<Pel>(std::nearbyint(v));
            }
          }
      }
      if (!st.ok) {
        std::lock_guard<std::mutex> hold(job->lock);
        if (!job->failed) job->status = st;
        job->failed = true;
        break;
      }
    }
    if (profile) {
      std::lock_guard<std::mutex> hold(job->lock);
      for (size_t i = 0; i < times.size(); ++i) {
        NodeTime &t = (*job->profile)[i];
        t.op = times[i].op, t.cin = times[i].cin, t.cout = times[i].cout, t.k = times[i].k;
        t.macs += times[i].macs;
        t.seconds += times[i].seconds;
      }
    }
  }

  // Sample conversions for fillTile: a float in [0, 1] (float models), the integer sample (int16 models).
  struct SampleToFloat {
    float peak;
    explicit SampleToFloat(float p) : peak(p) {}
    template <typename Pel>
    float operator()(Pel sample) const {
      return static_cast<float>(sample) / peak;
    }
  };
  struct SampleToInt {
    template <typename Pel>
    int32_t operator()(Pel sample) const {
      return static_cast<int32_t>(sample);
    }
  };

  // The one tile fill of both paths: the CTU at (x0, y0) with its context border, side x side samples,
  // edge-replicated outside the picture (as codecnn.data.ctu.tile_plane and codecnn's datasets).
  template <typename Pel, typename T, typename Convert>
  void fillTile(const Pel *src, ptrdiff_t stride, int width, int height, int x0, int y0, int side, T *tile,
                Convert convert) const {
    for (int y = 0; y < side; ++y) {
      const Pel *row = src + std::min(std::max(y0 + y - context_, 0), height - 1) * stride;
      T *t = tile + static_cast<size_t>(y) * side;
      for (int x = 0; x < side; ++x) t[x] = convert(row[std::min(std::max(x0 + x - context_, 0), width - 1)]);
    }
  }

  // The output scale of a node: its last parameter in int16 models, 0 (unused) in float ones.
  int outScale(const Node &n) const { return precision_ == kInt16 ? n.params.back() : 0; }

  // A node buffer takes its storage from the pool when it has one.
  template <typename T>
  static void recycle(Buf<T> &b, std::vector<std::vector<T>> &pool) {
    if (pool.empty()) return;
    b.v.swap(pool.back());
    pool.pop_back();
  }

  template <typename T>
  static void toPool(Buf<T> &b, std::vector<std::vector<T>> &pool) {
    if (b.v.capacity() == 0) return;
    pool.push_back(std::vector<T>());
    pool.back().swap(b.v);
  }

  // Every buffer of a finished tile goes back to the pool.
  template <typename T>
  static void release(std::vector<Buf<T>> &vals, std::vector<std::vector<T>> &pool) {
    for (size_t i = 0; i < vals.size(); ++i) toPool(vals[i], pool);
  }

  // The per-type steps of runGraph, as overloads: the QP plane, add (out holds the first input, at scale
  // aq) and the convolution (conv, below). Add works on the whole storage: margins stay zero.
  static void fillQp(Buffer &out, int qp) { fillInside(out, static_cast<float>(qp) / 51.0f); }
  static void fillQp(IBuffer &out, int qp) {
    fillInside(out, sat16((static_cast<int64_t>(qp) * (static_cast<int64_t>(1) << out.q) + 25) / 51));
  }
  template <typename T>
  static void fillInside(Buf<T> &out, T value) {
    out.clearMargins();
    for (int ch = 0; ch < out.c; ++ch)
      for (int y = 0; y < out.h; ++y)
        for (int x = 0; x < out.w; ++x) out.v[out.at(ch, y, x)] = value;
  }
  static void addInto(Buffer &out, int, const Buffer &b) {
    for (size_t k = 0; k < out.v.size(); ++k) out.v[k] += b.v[k];
  }
  static void addInto(IBuffer &out, int aq, const IBuffer &b) {
    for (size_t k = 0; k < out.v.size(); ++k)
      out.v[k] = sat16(shiftRound(out.v[k], aq - out.q) + shiftRound(b.v[k], b.q - out.q));
  }

  // The graph on one tile, float or int16 (the one runner of runTile and runTileInt): vals[0] holds the
  // input tile; nodes take their buffers from ``pool`` and give back those no later node reads. ``profile``:
  // every node's time (and a convolution's work) added to its entry.
  template <typename T>
  Status runGraph(std::vector<Buf<T>> &vals, int qp, std::vector<std::vector<T>> &pool,
                  std::vector<NodeTime> *profile) const {
    if (profile) profile->resize(nodes_.size());
    for (size_t i = 1; i < nodes_.size(); ++i) {
      const Node &n = nodes_[i];
      const double start = profile ? profileClock() : 0;
      const int qo = outScale(n);
      Buf<T> &out = vals[i];
      recycle(out, pool);
      if (n.op == OP_QP_PLANE) {
        const Buf<T> &a = vals[n.inputs[0]];
        out.reshape(1, a.h, a.w, a.m);
        out.q = qo;
        fillQp(out, qp);
      } else if (n.op == OP_CONCAT) {
        for (size_t k = 0; k < n.inputs.size(); ++k)
          if (vals[n.inputs[k]].q != qo) return Status::bad("concat of different scales");
        Status st = concatInto(vals, n, out);
        if (!st.ok) return st;
        out.q = qo;
      } else if (n.op == OP_CONV2D) {
        Status st = conv(n, vals[n.inputs[0]], out);
        if (!st.ok) return st;
      } else if (n.op == OP_RELU) {
        takeOrCopy(vals, n, i, out);
        for (size_t k = 0; k < out.v.size(); ++k) out.v[k] = out.v[k] > T(0) ? out.v[k] : T(0);
      } else if (n.op == OP_ADD) {
        const Buf<T> &a = vals[n.inputs[0]], &b = vals[n.inputs[1]];
        if (a.c != b.c || a.h != b.h || a.w != b.w) return Status::bad("add of different shapes");
        const int aq = a.q;
        takeOrCopy(vals, n, i, out);  // b stays valid: an input read twice is copied, not moved
        out.q = qo;
        addInto(out, aq, b);
      } else if (n.op == OP_CROP) {
        Status st = cropInto(vals[n.inputs[0]], n.params[0], out);
        if (!st.ok) return st;
        out.q = vals[n.inputs[0]].q;
      }
      if (profile) {
        NodeTime &t = (*profile)[i];
        t.op = n.op;
        t.seconds += profileClock() - start;
        if (n.op == OP_CONV2D) {
          const Tensor &W = tensors_[n.params[0]];
          t.cout = static_cast<int>(W.dims[0]), t.cin = static_cast<int>(W.dims[1]), t.k = static_cast<int>(W.dims[2]);
          t.macs += static_cast<uint64_t>(out.h) * out.w * W.dims[0] * W.dims[1] * W.dims[2] * W.dims[3];
        }
      }
      for (size_t k = 0; k < n.inputs.size(); ++k)  // free what no later node reads (never the input tile)
        if (lastUse_[n.inputs[k]] == i && n.inputs[k] != 0) toPool(vals[n.inputs[k]], pool);
    }
    return Status::good();
  }

  static std::string num(uint64_t v) { return decimal(v); }
  static std::string hex(uint32_t v) { return hex32(v); }

  // The value of a top-level key of the JSON header: an integer, or a string without escapes.
  bool headerInt(const char *key, int &out) const {
    std::string v;
    if (!json::topLevelValue(header_, key, v) || v.empty() || v.size() > 6) return false;
    long n = 0;
    for (size_t k = 0; k < v.size(); ++k) {
      if (v[k] < '0' || v[k] > '9') return false;
      n = n * 10 + (v[k] - '0');
    }
    out = static_cast<int>(n);
    return true;
  }

  bool headerString(const char *key, std::string &out) const {
    std::string v;
    if (!json::topLevelValue(header_, key, v) || v.size() < 2 || v[0] != '"' || v[v.size() - 1] != '"' ||
        v.find('\\') != std::string::npos)
      return false;
    out = v.substr(1, v.size() - 2);
    return true;
  }

  // Channel inference and parameter checks, node by node, at load time.
  Status infer(uint32_t i, Node &n) const {
    const std::string at = "node " + num(i) + ": ";
    const size_t extra = precision_ == kInt16 ? 1 : 0;  // int16: the output scale, last
    if (extra) {
      if (n.params.empty() || n.params.back() < 1 || n.params.back() > 30) return Status::bad(at + "bad output scale");
    }
    const size_t want = (n.op == OP_CONV2D ? 4 : (n.op == OP_CROP ? 1 : 0)) + extra;
    if (n.params.size() != want) return Status::bad(at + "wrong number of parameters");
    switch (n.op) {
      case OP_INPUT:
        if (i != 0 || !n.inputs.empty()) return Status::bad(at + "input must be node 0");
        n.channels = 1;
        return Status::good();
      case OP_QP_PLANE:
      case OP_RELU:
      case OP_CROP:
        if (n.inputs.size() != 1) return Status::bad(at + "needs one input");
        if (n.op == OP_CROP && (n.params[0] < 0 || n.params[0] > 64)) return Status::bad(at + "bad crop");
        n.channels = n.op == OP_QP_PLANE ? 1 : nodes_[n.inputs[0]].channels;
        return Status::good();
      case OP_CONCAT: {
        if (n.inputs.empty()) return Status::bad(at + "concat of nothing");
        uint64_t c = 0;
        for (size_t k = 0; k < n.inputs.size(); ++k) c += nodes_[n.inputs[k]].channels;
        if (c > 1u << 16) return Status::bad(at + "too many channels");
        n.channels = static_cast<uint32_t>(c);
        return Status::good();
      }
      case OP_ADD:
        if (n.inputs.size() != 2 || nodes_[n.inputs[0]].channels != nodes_[n.inputs[1]].channels)
          return Status::bad(at + "add needs two inputs with equal channels");
        n.channels = nodes_[n.inputs[0]].channels;
        return Status::good();
      case OP_CONV2D: {
        if (n.inputs.size() != 1) return Status::bad(at + "bad conv");
        int32_t w = n.params[0], b = n.params[1], pad = n.params[2], groups = n.params[3];
        if (w < 0 || b < 0 || static_cast<size_t>(w) >= tensors_.size() || static_cast<size_t>(b) >= tensors_.size())
          return Status::bad(at + "conv tensor index out of range");
        const Tensor &W = tensors_[w], &B = tensors_[b];
        if (W.dims.size() != 4 || B.dims.size() != 1 || W.dims[2] != W.dims[3] || W.dims[2] == 0 || W.dims[2] > 15 ||
            B.dims[0] != W.dims[0] || W.dims[0] == 0 || W.dims[1] == 0)
          return Status::bad(at + "conv tensors have bad shapes");
        if (extra && (W.dtype != 1 || B.dtype != 2))
          return Status::bad(at + "int16 conv needs int16 weights, int32 bias");
        if (!extra && (W.data.empty() || B.data.empty())) return Status::bad(at + "float conv without float tensors");
        if (groups < 1 || pad < 0 || pad > 7 || W.dims[0] % static_cast<uint32_t>(groups) != 0 ||
            static_cast<uint64_t>(W.dims[1]) * static_cast<uint32_t>(groups) != nodes_[n.inputs[0]].channels)
          return Status::bad(at + "conv does not fit its input");
        n.channels = W.dims[0];
        return Status::good();
      }
      default:
        return Status::bad(at + "unknown op");
    }
  }

  // The portable convolution, float and int16 alike (any groups, any kernel size): for each output channel an
  // accumulator plane, four input channels per pass. The input's zero margins are its padding, so the
  // loops have no bounds. int16 accumulates in uint32 with wrap-around (defined, order-independent): the
  // same bits as the vector kernels and as the Python twin.
  static inline float product(float w, float s) { return w * s; }
  static inline uint32_t product(int32_t w, int16_t s) { return static_cast<uint32_t>(w * static_cast<int32_t>(s)); }
  static inline float accInit(float b) { return b; }
  static inline uint32_t accInit(int32_t b) { return static_cast<uint32_t>(b); }
  static inline float finish(float a, int) { return a; }
  static inline int16_t finish(uint32_t a, int shift) {
    int32_t v;
    std::memcpy(&v, &a, 4);
    return sat16(shiftRound(v, shift));
  }

  template <typename T, typename Wt, typename Acc>
  static void convPortable(const Buf<T> &in, const Wt *w, const Wt *bias, int cout, int cin_g, int k, int pad,
                           int groups, int shift, Buf<T> &out) {
    const int G = Buf<T>::G, oh = out.h, ow = out.w, cout_g = cout / groups, kk = k * k;
    std::vector<Acc> acc(static_cast<size_t>(oh) * ow);
    for (int co = 0; co < cout; ++co) {
      std::fill(acc.begin(), acc.end(), accInit(bias[co]));
      const int c0 = (co / cout_g) * cin_g;
      const Wt *wco = w + static_cast<size_t>(co) * cin_g * kk;
      int ci = 0;
      for (; ci + 4 <= cin_g; ci += 4)
        for (int t = 0; t < kk; ++t) {
          const int dy = t / k - pad, dx = t % k - pad;
          const Wt w0 = wco[ci * kk + t], w1 = wco[(ci + 1) * kk + t], w2 = wco[(ci + 2) * kk + t],
                   w3 = wco[(ci + 3) * kk + t];
          for (int y = 0; y < oh; ++y) {
            const T *s0 = &in.v[in.at(c0 + ci, y + dy, dx)], *s1 = &in.v[in.at(c0 + ci + 1, y + dy, dx)];
            const T *s2 = &in.v[in.at(c0 + ci + 2, y + dy, dx)], *s3 = &in.v[in.at(c0 + ci + 3, y + dy, dx)];
            Acc *d = &acc[static_cast<size_t>(y) * ow];
            for (int x = 0; x < ow; ++x)
              d[x] += product(w0, s0[x * G]) + product(w1, s1[x * G]) + product(w2, s2[x * G]) + product(w3, s3[x * G]);
          }
        }
      for (; ci < cin_g; ++ci)
        for (int t = 0; t < kk; ++t) {
          const int dy = t / k - pad, dx = t % k - pad;
          const Wt wv = wco[ci * kk + t];
          for (int y = 0; y < oh; ++y) {
            const T *s = &in.v[in.at(c0 + ci, y + dy, dx)];
            Acc *d = &acc[static_cast<size_t>(y) * ow];
            for (int x = 0; x < ow; ++x) d[x] += product(wv, s[x * G]);
          }
        }
      for (int y = 0; y < oh; ++y) {
        T *o = &out.v[out.at(co, y, 0)];
        const Acc *a = &acc[static_cast<size_t>(y) * ow];
        for (int x = 0; x < ow; ++x) o[x * G] = finish(a[x], shift);
      }
    }
  }

  // A convolution node: the output's shape and margins, then the vector path (weights packed at load) or
  // the portable loops.
  template <typename T>
  Status conv(const Node &n, const Buf<T> &in, Buf<T> &out) const {
    const Tensor &W = tensors_[n.params[0]], &B = tensors_[n.params[1]];
    const int pad = n.params[2], groups = n.params[3];
    const int cout = static_cast<int>(W.dims[0]), cin_g = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
    const int oh = in.h + 2 * pad - k + 1, ow = in.w + 2 * pad - k + 1;
    if (oh <= 0 || ow <= 0) return Status::bad("convolution larger than the tile");
    if (pad > in.m) return Status::bad("convolution padding wider than the margins");
    out.reshape(cout, oh, ow, in.m);
    out.q = outScale(n);
    out.clearMargins();
    const int shift = precision_ == kInt16 ? W.frac + in.q - out.q : 0;
#ifdef CNNW_SIMD
    if (n.plan >= 0) {
      convRows(plans_[n.plan], in, pad, shift, out);
      return Status::good();
    }
#endif
    portable(W, B, in, cout, cin_g, k, pad, groups, shift, out);
    return Status::good();
  }
  static void portable(const Tensor &W, const Tensor &B, const Buffer &in, int cout, int cin_g, int k, int pad,
                       int groups, int shift, Buffer &out) {
    convPortable<float, float, float>(in, &W.data[0], &B.data[0], cout, cin_g, k, pad, groups, shift, out);
  }
  static void portable(const Tensor &W, const Tensor &B, const IBuffer &in, int cout, int cin_g, int k, int pad,
                       int groups, int shift, IBuffer &out) {
    convPortable<int16_t, int32_t, uint32_t>(in, &W.idata[0], &B.idata[0], cout, cin_g, k, pad, groups, shift, out);
  }

  // The vector path's packed weights of one convolution: output channels in groups of at most CO (int16:
  // whole pairs), each group's weights [input channel (int16: pair)][ky][kx][channel of the group], and
  // the kernel of its size.
  struct ConvGroup {
    int co0, count;
    size_t woff;
#ifdef CNNW_SIMD
    simd::KernelF kf;
    simd::KernelI ki;
#endif
  };
  struct ConvPlan {
    int k;
    std::vector<ConvGroup> groups;
    std::vector<float> wf, bf;
    std::vector<int32_t> wi, bi;
  };

  // Packs the weights of every convolution the vector kernels take (groups == 1), once, at load time.
  void buildPlans() {
    plans_.clear();
#ifdef CNNW_SIMD
    for (size_t i = 0; i < nodes_.size(); ++i) {
      Node &n = nodes_[i];
      if (n.op != OP_CONV2D || n.params[3] != 1) continue;
      const Tensor &W = tensors_[n.params[0]], &B = tensors_[n.params[1]];
      const int cout = static_cast<int>(W.dims[0]), cin = static_cast<int>(W.dims[1]), k = static_cast<int>(W.dims[2]);
      const int kk = k * k;
      const bool fixed = precision_ == kInt16;
      ConvPlan pl;
      pl.k = k;
      // output channels (int16: pairs) in the fewest groups of at most CO, of near-equal sizes
      const int unit = fixed ? 2 : 1, units = (cout + unit - 1) / unit;
      const int most = (fixed ? static_cast<int>(simd::VecI::CO) : static_cast<int>(simd::VecF::CO)) / unit;
      const int ng = (units + most - 1) / most;
      int u0 = 0;
      size_t woff = 0;
      for (int g = 0; g < ng; ++g) {
        const int nu = units / ng + (g < units % ng ? 1 : 0);
        ConvGroup gr;
        gr.co0 = u0 * unit, gr.count = nu * unit, gr.woff = woff;
        gr.kf =
            k == 3 ? simd::kernelF<3>(gr.count) : (k == 1 ? simd::kernelF<1>(gr.count) : simd::kernelF<0>(gr.count));
        gr.ki =
            k == 3 ? simd::kernelI<3>(gr.count) : (k == 1 ? simd::kernelI<1>(gr.count) : simd::kernelI<0>(gr.count));
        pl.groups.push_back(gr);
        woff += static_cast<size_t>((cin + unit - 1) / unit) * kk * gr.count;
        u0 += nu;
      }
      const int coutp = units * unit;
      if (fixed) {
        pl.wi.assign(woff, 0);
        pl.bi.assign(coutp, 0);
        for (int co = 0; co < cout; ++co) pl.bi[co] = B.idata[co];
      } else {
        pl.wf.assign(woff, 0.f);
        pl.bf.assign(coutp, 0.f);
        for (int co = 0; co < cout; ++co) pl.bf[co] = B.data[co];
      }
      for (size_t g = 0; g < pl.groups.size(); ++g) {
        const ConvGroup &gr = pl.groups[g];
        for (int j = 0; j < gr.count && gr.co0 + j < cout; ++j)
          for (int c = 0; c < cin; ++c)
            for (int t = 0; t < kk; ++t) {
              const size_t src = (static_cast<size_t>(gr.co0 + j) * cin + c) * kk + t;
              const size_t dst = gr.woff + (static_cast<size_t>(c / unit) * kk + t) * gr.count + j;
              if (!fixed) {
                pl.wf[dst] = W.data[src];
              } else {  // (even channel, odd channel) as the low and high int16 of one int32
                const uint32_t v = static_cast<uint16_t>(static_cast<int16_t>(W.idata[src]));
                const uint32_t word = static_cast<uint32_t>(pl.wi[dst]) | (c % 2 ? v << 16 : v);
                std::memcpy(&pl.wi[dst], &word, 4);
              }
            }
      }
      n.plan = static_cast<int>(plans_.size());
      plans_.push_back(pl);
    }
#endif
  }

#ifdef CNNW_SIMD
  // The vector convolution: output rows in blocks of N x P pixels, every group of output channels on each
  // block while its inputs are in cache. Reads past a row's end only reach lanes that are not stored.
  static void convRows(const ConvPlan &pl, const Buffer &in, int pad, int, Buffer &out) {
    const int block = simd::VecF::N * simd::VecF::P;
    const ptrdiff_t rs = in.rowStride();
    const size_t cs = in.planeSize(), os = out.planeSize();
    for (int y = 0; y < out.h; ++y)
      for (int x0 = 0; x0 < out.w; x0 += block) {
        const float *src = &in.v[in.at(0, y - pad, x0 - pad)];
        float *dst = &out.v[out.at(0, y, x0)];
        const int n = std::min(block, out.w - x0);
        for (size_t g = 0; g < pl.groups.size(); ++g) {
          const ConvGroup &gr = pl.groups[g];
          gr.kf(src, cs, rs, in.c, pl.k, &pl.wf[gr.woff], &pl.bf[gr.co0], dst + gr.co0 * os, os, n);
        }
      }
  }
  static void convRows(const ConvPlan &pl, const IBuffer &in, int pad, int shift, IBuffer &out) {
    const int block = simd::VecI::N * simd::VecI::P;
    const ptrdiff_t rs = 2 * static_cast<ptrdiff_t>(in.rowStride());
    const size_t cs = 2 * in.planeSize(), os = 2 * out.planeSize();
    for (int y = 0; y < out.h; ++y)
      for (int x0 = 0; x0 < out.w; x0 += block) {
        const int16_t *src = &in.v[in.at(0, y - pad, x0 - pad)];
        int16_t *dst = &out.v[out.at(0, y, x0)];
        const int n = std::min(block, out.w - x0);
        for (size_t g = 0; g < pl.groups.size(); ++g) {
          const ConvGroup &gr = pl.groups[g];
          gr.ki(src, cs, rs, in.planes(), pl.k, &pl.wi[gr.woff], &pl.bi[gr.co0], shift, dst + (gr.co0 / 2) * os, os, n);
        }
      }
  }
#endif

  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
  std::vector<size_t> lastUse_;
  std::vector<ConvPlan> plans_;  // the vector path's packed weights (Node::plan)
  std::string header_;
  int context_;
  int margin_;  // zero margin of every buffer: the widest convolution padding
  uint32_t precision_;
  uint32_t version_;   // of the loaded file (0: none loaded)
  uint32_t checksum_;  // its CRC-32 (version 2), else 0
};

}  // namespace cnnw

#endif  // CNNW_H
