// int16_peak: the peak int16 multiply-accumulate rate of one core, for scripts/bench_bridge.py.
//   g++ -O3 -march=native -o int16_peak scripts/int16_peak.cpp && ./int16_peak [SECONDS]
// Runs kChains independent accumulator chains of the int16 multiply-accumulate that the int16 kernels of
// hm_bridge/cpp/cnnw_simd.h use in the same build (the same choice of instruction set): vpdpwssd on zmm with
// AVX-512 VNNI, else vpmaddwd + vpaddd on zmm (AVX-512 BW) or on ymm (AVX2). The chains cover the
// instruction's latency, so only its throughput limits the rate. Each int16 product counts as one MAC.
// Prints one line, "INSTRUCTION GMAC/S SECONDS CHAINS": the best rate of its rounds (~0.04 s each) over
// SECONDS (default 0.5) of this thread's CPU time (time the scheduler gives to other processes does not count).
#include <time.h>

#include <cstdio>
#include <cstdlib>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__FMA__)
#include <immintrin.h>
typedef __m512i V;
static const int kLanes = 32;  // int16 products per instruction
static inline V fill(int v) { return _mm512_set1_epi32(v); }
static inline int first(V v) {
  int t[16];
  _mm512_storeu_si512(t, v);
  return t[0];
}
#ifdef __AVX512VNNI__
static const char kName[] = "vpdpwssd-zmm";
static inline V mac(V acc, V a, V b) { return _mm512_dpwssd_epi32(acc, a, b); }
#else
// (the chain's own value as one factor: a product of two loop-invariant operands would be hoisted)
static const char kName[] = "vpmaddwd+vpaddd-zmm";
static inline V mac(V acc, V, V b) { return _mm512_add_epi32(acc, _mm512_madd_epi16(acc, b)); }
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256i V;
static const int kLanes = 16;
static inline V fill(int v) { return _mm256_set1_epi32(v); }
static inline int first(V v) {
  int t[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(t), v);
  return t[0];
}
static const char kName[] = "vpmaddwd+vpaddd-ymm";
static inline V mac(V acc, V, V b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(acc, b)); }
#else
#error "int16_peak needs AVX2 with FMA, or AVX-512 BW: build it with -march=native on such a CPU"
#endif

static const int kChains = 16;       // independent accumulators: latency (4-5 cycles) x issue rate, and more
static const long kRound = 1 << 23;  // instructions of each chain in one round

static double cpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
  const double budget = argc > 1 ? std::atof(argv[1]) : 0.5;
  V acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = fill(k);
  V a = fill(0x00030001), b = fill(0x00020005);
  double best = 0, total = 0;
  while (total < budget) {
    const double t0 = cpuSeconds();
    for (long i = 0; i < kRound / 16; ++i) {
      __asm__ volatile("" : "+v"(a), "+v"(b));  // opaque operands: nothing is computed once for all rounds
      for (int r = 0; r < 16; ++r)
        for (int k = 0; k < kChains; ++k) acc[k] = mac(acc[k], a, b);
    }
    const double dt = cpuSeconds() - t0;
    total += dt;
    const double rate = static_cast<double>(kRound) * kChains * kLanes / dt;
    if (rate > best) best = rate;
  }
  volatile int sink = 0;  // the results are used: no chain is optimised away
  for (int k = 0; k < kChains; ++k) sink = sink ^ first(acc[k]);
  std::printf("%s %.2f %.3f %d\n", kName, best / 1e9, total, kChains);
  return 0;
}
