// libFuzzer target: the memsync wire protocol's decoders (frame header,
// HELLO, HELLO reply, error reply, range, LZ4 payloads) on arbitrary bytes. They must
// refuse with a Status, never crash, and what they accept must encode back
// to the same bytes (HELLO and its reply are canonical).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "wire/compression.hpp"
#include "wire/frame.hpp"

using namespace memsync;
using namespace memsync::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  if (size >= kHeaderSize) {
    auto h = decode_header(in.first(kHeaderSize), kMaxPayload + kFrameSlack);
    if (h && h->length > kMaxPayload + kFrameSlack) std::abort();
  }
  if (auto hello = decode_hello(in)) {
    auto again = encode_hello(*hello);
    if (!std::equal(again.begin(), again.end(), in.begin(), in.end())) std::abort();
    if (auto rep = negotiate(*hello, ServerTerms{}); rep && !check_hello_reply(*hello, *rep)) {
      // A negotiated reply must satisfy the client that asked, unless the
      // client asked for less than the protocol's minimum payload.
      if (hello->max_payload >= kMinPayload || hello->max_payload == 0) std::abort();
    }
  }
  if (auto rep = decode_hello_reply(in)) {
    auto again = encode_hello_reply(*rep);
    if (!std::equal(again.begin(), again.end(), in.begin(), in.end())) std::abort();
  }
  if (auto e = decode_error(in)) (void)to_status(*e, "fuzz");
  if (auto rg = decode_range(in)) (void)check_range(*rg, uint64_t{1} << 40, kMaxPayload);
  // A compressed part: the claimed raw length (bounded, as a receiver bounds
  // it by its max payload) sizes the output; decompression must fit exactly.
  if (size >= 4) {
    uint32_t raw = (uint32_t(data[0]) << 24 | uint32_t(data[1]) << 16 | uint32_t(data[2]) << 8 | data[3]) % (1 << 20);
    std::vector<std::byte> out(raw);
    if (decompress_payload(in, out)) {
      auto again = compress_payload(out);
      std::vector<std::byte> back(raw);
      if (!again.empty() && (!decompress_payload(again, back) || back != out)) std::abort();
    }
  }
  return 0;
}
