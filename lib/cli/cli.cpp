#include "cli/cli.hpp"

#include <boost/program_options/errors.hpp>
#include <cstdio>

#include "util/log.hpp"
#include "util/signals.hpp"

#ifndef MEMSYNC_VERSION
#define MEMSYNC_VERSION "0.0.0-dev"
#endif

namespace memsync::cli {

std::string version_text(const std::string& tool) { return tool + " " MEMSYNC_VERSION " (memsync)\n"; }

int fail(const std::string& what, const Status& st) {
  log::error("unable to " + what + ": " + st.message());
  return kExitFailure;
}

int run_main(const char* tool, const std::function<int()>& body) {
  log::set_program(tool);
  ignore_sigpipe();
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: usage: %s\nTry '%s --help' for more information.\n", tool, e.what(), tool);
    return kExitUsage;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s: usage: %s\nTry '%s --help' for more information.\n", tool, e.what(), tool);
    return kExitUsage;
  } catch (const std::exception& e) {
    log::error(std::string("fatal: ") + e.what());
    return kExitFailure;
  }
}

}  // namespace memsync::cli
