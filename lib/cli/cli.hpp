// What every memsync tool's main() shares: the exit codes, the message
// shape, --help/--version text, and turning errors into exits.
//
//   exit 0  success
//   exit 1  runtime failure ("TOOL: unable to VERB OBJECT: reason")
//   exit 2  usage error     ("TOOL: usage: ..." plus a pointer to --help)
//
// run_main() sets the program name for logs, ignores SIGPIPE, calls the
// body, and maps a thrown UsageError or boost::program_options error to
// exit 2 and a failed Status (via fail()) to exit 1.
// Thread safety: for main() only.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <stdexcept>
#include <string>

#include "util/status.hpp"

namespace memsync::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "TOOL VERSION (memsync)" for --version.
std::string version_text(const std::string& tool);

// Prints "TOOL: unable to WHAT: reason" and returns kExitFailure.
int fail(const std::string& what, const Status& st);

int run_main(const char* tool, const std::function<int()>& body);

// Parses argv[0..argc) with `desc` and one positional argument named
// `positional` into vm (and notifies), returning how many times
// -v/--verbose was given: every tool parses and counts repeated -v alike.
int parse_options(int argc, char** argv, const boost::program_options::options_description& desc,
                  const char* positional, boost::program_options::variables_map& vm);

// Throws UsageError(message) if st failed: for checks of option values.
inline void usage_check(const Status& st) {
  if (!st) throw UsageError(st.message());
}

// Unwraps a Result or throws UsageError("OPTION: message").
template <class T>
T usage_value(Result<T> r, const std::string& option) {
  if (!r) throw UsageError(option + ": " + r.status().message());
  return std::move(r).value();
}

}  // namespace memsync::cli
