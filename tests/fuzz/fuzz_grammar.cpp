// libFuzzer target: every command-line grammar (endpoints, backend specs,
// NBD URIs, sizes, durations) on arbitrary text. Parsers must refuse with a
// Status, never crash; what they accept must print back consistently.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backend/open_store.hpp"
#include "backend/spec.hpp"
#include "net/endpoint.hpp"
#include "net/nbd_uri.hpp"
#include "util/units.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto ep = parse_endpoint(text); ep && ep->kind == Endpoint::Kind::Tcp) {
    // A parsed TCP endpoint prints to text that parses to the same address.
    auto again = parse_endpoint(ep->to_string());
    if (!again || again->host != ep->host || again->port != ep->port) std::abort();
  }
  (void)parse_backend_spec(text);
  (void)validate_backend_spec(text);  // checks only: never creates anything
  (void)parse_nbd_uri(text);
  (void)parse_size(text);
  (void)parse_duration(text);
  (void)parse_count(text);
  return 0;
}
