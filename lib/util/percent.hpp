// %XX escapes (RFC 3986 percent-encoding), shared by the backend spec
// grammar, NBD URIs and the $uri that --run hands to a command.
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/status.hpp"

namespace memsync {

// Decodes %XX; a '%' not followed by two hex digits is EINVAL.
Result<std::string> percent_decode(std::string_view s);

// The non-empty '&'-separated items of a query string ("a=1&&b" gives
// "a=1" and "b"), not yet split at '=' nor decoded.
std::vector<std::string_view> query_items(std::string_view query);

// Escapes everything but unreserved characters and '/'.
std::string percent_encode(std::string_view s);

}  // namespace memsync
