// Backend specs: the one grammar for naming a store on a command line.
//
//   SCHEME:LOCATION[?KEY=VALUE[&KEY=VALUE]...]   a known scheme selects a backend
//   PATH                                         anything else is a file path
//
// Known schemes: mem, file, dir (and, reserved for later backends: remote,
// redis, tape, nbd, nbds). A word before ':' that is not a known scheme is
// part of a path, so "backup:2024.img" is a file. A path that starts with a
// scheme name is written with "./" (./mem:1G) or as file:PATH. Only the
// scheme form has parameters: a '?' in a plain path is part of the name.
// Values may use %XX escapes (%26 for '&', %3F for '?').
//
// Thread safety: pure parsing.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "util/status.hpp"

namespace memsync {

struct BackendSpec {
  std::string scheme;                          // "file" for plain paths
  std::string location;                        // the part after "scheme:", before '?'
  std::map<std::string, std::string> params;   // decoded KEY=VALUE pairs
  std::string text;                            // as written
};

Result<BackendSpec> parse_backend_spec(std::string_view text);

// True for the schemes this grammar reserves (whether or not built in yet).
bool is_known_scheme(std::string_view scheme);

}  // namespace memsync
