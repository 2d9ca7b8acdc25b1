// libFuzzer target: request decoding and validation on arbitrary headers
// and limits. Nothing may crash, and a verdict must be self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "nbd/request.hpp"
#include "util/endian.hpp"

using namespace memsync;
using namespace memsync::nbd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 28 + 8 + 4 + 2) return 0;
  auto bytes = std::as_bytes(std::span(data, size));
  ByteReader r(bytes.subspan(28));
  RequestLimits l;
  l.export_size = r.u64();
  l.max_payload = r.u32();
  l.transmission_flags = r.u16();
  l.structured_replies = l.transmission_flags & 0x8000;
  l.base_allocation = l.transmission_flags & 0x4000;
  l.min_block = 1;
  auto req = decode_request(bytes.subspan(0, 28));
  if (!req) return 0;
  Verdict v = check_request(*req, l);
  // An accepted READ/WRITE lies inside the export and under the payload cap.
  if (v.error == 0 && (req->type == 0 || req->type == 1)) {
    if (req->offset > l.export_size || req->length > l.export_size - req->offset) std::abort();
    if (req->length > l.max_payload) std::abort();
  }
  return 0;
}
