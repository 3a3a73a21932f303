// cnnw_load_check: load each file named on the command line, run one tile through it, and print one line
// per file: OK; or "OK; <file>: warning: ..." (loaded with a warning: a version 1 file, without checksum);
// or the error (e.g. "<file>: the file is damaged: ..."). Used by the tests, also under AddressSanitizer on
// truncated and bit-flipped models: it must never crash.
#include <iostream>
#include <string>

#include "cnnw.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    cnnw::Model m;
    cnnw::Status st = m.load(argv[i]);
    const std::string warning = st.ok ? st.message : std::string();
    const int side = 20 + 2 * m.context();
    if (st.ok && m.isInt16()) {
      std::vector<int32_t> tile(static_cast<size_t>(side) * side, 128), out;
      st = m.runTileInt(&tile[0], side, 8, 32, out);
    } else if (st.ok) {
      std::vector<float> tile(static_cast<size_t>(side) * side, 0.5f), res;
      st = m.runTile(&tile[0], side, 32, res);
    }
    std::cout << (!st.ok ? st.message : (warning.empty() ? "OK" : "OK; " + warning)) << "\n";
  }
  return 0;
}
