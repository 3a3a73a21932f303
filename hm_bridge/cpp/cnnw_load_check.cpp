// cnnw_load_check: load each file named on the command line and print OK or the loader's message.
// Used by the tests under AddressSanitizer on truncated and bit-flipped models: it must never crash.
#include <iostream>

#include "cnnw.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    cnnw::Model m;
    cnnw::Status st = m.load(argv[i]);
    if (st.ok) {
      std::vector<float> tile(static_cast<size_t>(20 + 2 * m.context()) * (20 + 2 * m.context()), 0.5f), res;
      st = m.runTile(&tile[0], 20 + 2 * m.context(), 32, res);
    }
    std::cout << (st.ok ? "OK" : st.message) << "\n";
  }
  return 0;
}
