// cnnw_load_check: load each file named on the command line, run one tile through it, and print OK or the
// message. Used by the tests under AddressSanitizer on truncated and bit-flipped models: it must never crash.
#include <iostream>

#include "cnnw.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    cnnw::Model m;
    cnnw::Status st = m.load(argv[i]);
    const int side = 20 + 2 * m.context();
    if (st.ok && m.isInt16()) {
      std::vector<int32_t> tile(static_cast<size_t>(side) * side, 128), out;
      st = m.runTileInt(&tile[0], side, 8, 32, out);
    } else if (st.ok) {
      std::vector<float> tile(static_cast<size_t>(side) * side, 0.5f), res;
      st = m.runTile(&tile[0], side, 32, res);
    }
    std::cout << (st.ok ? "OK" : st.message) << "\n";
  }
  return 0;
}
