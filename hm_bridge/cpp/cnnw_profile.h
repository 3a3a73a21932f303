// cnnw_profile.h -- where the time of cnnw.h's graph goes: the clock and the per-node record (NodeTime) that
// Model::filterPlane fills when given a profile (cnnw_tool --profile prints it).
#ifndef CNNW_PROFILE_H
#define CNNW_PROFILE_H

#include <time.h>  // clock_gettime and CLOCK_THREAD_CPUTIME_ID where the platform has them (POSIX)

#include <chrono>
#include <cstdint>

namespace cnnw {

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

}  // namespace cnnw

#endif  // CNNW_PROFILE_H
