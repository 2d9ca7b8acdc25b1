// The memsync wire protocol, version 1: constants. man/memsync-wire.7 is the
// specification; this header only names its numbers.
//
// A frame is a 20-byte header (magic, type, flags, id, length; big-endian)
// followed by `length` payload bytes. Requests have types 0x0001-0x7FFF,
// the reply to type T has type T|0x8000. Extensions come only behind
// feature bits negotiated in HELLO.
#pragma once

#include <cstddef>
#include <cstdint>

namespace memsync::wire {

inline constexpr uint32_t kMagic = 0x4D535731;  // "MSW1"
inline constexpr size_t kHeaderSize = 20;
inline constexpr uint16_t kVersion = 1;

// Request types; the reply to T is T | kReplyBit.
inline constexpr uint16_t kHello = 0x0001;
inline constexpr uint16_t kRead = 0x0002;
inline constexpr uint16_t kWrite = 0x0003;
inline constexpr uint16_t kSize = 0x0004;
inline constexpr uint16_t kSync = 0x0005;
inline constexpr uint16_t kTrim = 0x0006;         // feature kFeatureTrim
inline constexpr uint16_t kWriteZeroes = 0x0007;  // feature kFeatureTrim
// Reserved ranges: 0x0010-0x001F migration (track, dirty list, finalize),
// 0x0020-0x002F hash lists, 0x0030 resize, 0x0040-0x004F relay.
inline constexpr uint16_t kReplyBit = 0x8000;

// Flags.
inline constexpr uint16_t kFlagFua = 0x0001;         // WRITE: durable before the reply
inline constexpr uint16_t kFlagCompressed = 0x0002;  // data part is u32 raw length + LZ4 block
inline constexpr uint16_t kFlagUrgent = 0x0004;      // served ahead of background requests
inline constexpr uint16_t kFlagError = 0x8000;       // replies: payload is an error
inline constexpr uint16_t kRequestFlags = kFlagFua | kFlagCompressed | kFlagUrgent;

// Feature bits (HELLO).
inline constexpr uint64_t kFeatureLz4 = 1ull << 0;
inline constexpr uint64_t kFeatureTrim = 1ull << 1;
inline constexpr uint64_t kFeatureMigration = 1ull << 2;  // reserved
inline constexpr uint64_t kFeatureHashes = 1ull << 3;     // reserved
inline constexpr uint64_t kFeatureResize = 1ull << 4;     // reserved
inline constexpr uint64_t kFeatureRelay = 1ull << 5;      // reserved
// What this implementation can accept today.
inline constexpr uint64_t kFeaturesKnown = kFeatureLz4 | kFeatureTrim;

// Limits.
inline constexpr uint32_t kMinPayload = 4096;
inline constexpr uint32_t kDefaultPayload = 4u << 20;
inline constexpr uint32_t kMaxPayload = 32u << 20;
inline constexpr uint32_t kDefaultInflight = 64;
inline constexpr uint32_t kMaxInflight = 1024;
inline constexpr uint32_t kHelloLimit = 4096;    // frame length accepted before HELLO completes
inline constexpr uint32_t kFrameSlack = 64;      // request fields beside max_payload data bytes
inline constexpr size_t kMaxNameLength = 255;
inline constexpr size_t kMaxErrorMessage = 1024;

}  // namespace memsync::wire
