#include "cli/cli.hpp"

#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstdlib>

#include "util/log.hpp"
#include "util/signals.hpp"
#include "util/swap_path.hpp"

#ifndef MEMSYNC_VERSION
#define MEMSYNC_VERSION "0.0.0-dev"
#endif

namespace memsync::cli {

std::string version_text(const std::string& tool) { return tool + " " MEMSYNC_VERSION " (memsync)\n"; }

int fail(const std::string& what, const Status& st) {
  log::error("unable to " + what + ": " + st.message());
  return kExitFailure;
}

int parse_options(int argc, char** argv, const boost::program_options::options_description& desc,
                  const char* positional, boost::program_options::variables_map& vm) {
  boost::program_options::positional_options_description pos;
  pos.add(positional, 1);
  auto parsed = boost::program_options::command_line_parser(argc, argv).options(desc).positional(pos).run();
  int verbose = 0;
  for (auto& o : parsed.options)
    if (o.string_key == "verbose") ++verbose;
  boost::program_options::store(parsed, vm);
  boost::program_options::notify(vm);
  return verbose;
}

int run_main(const char* tool, const std::function<int()>& body) {
  log::set_program(tool);
  ignore_sigpipe();
  if (const char* v = std::getenv(kSwapPathEnv); v && std::string(v) == "1") {
    Status st = enter_swap_path();
    if (!st) return fail("serve on the swap path", st);
  }
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
