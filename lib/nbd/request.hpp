// NBD requests: decoding of the 28-byte header and the validation every
// request passes before any store sees it (nbdkit's habit: check range,
// read-only and flags once, at the edge).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "nbd/export_config.hpp"
#include "util/status.hpp"

namespace memsync::nbd {

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// Fails (EPROTO) on a wrong magic: the stream is out of sync and the only
// safe answer is to disconnect.
Result<Request> decode_request(std::span<const std::byte> header);

struct RequestLimits {
  uint64_t export_size = 0;
  uint32_t max_payload = 0;
  uint32_t min_block = 1;
  uint16_t transmission_flags = 0;
  bool structured_replies = false;
  bool base_allocation = false;
};

// The verdict on a request: 0 to execute it, or the NBD error to reply
// with (EINVAL, EPERM, ENOSPC, EOVERFLOW...) and a message for the log and
// for structured error replies.
struct Verdict {
  uint32_t error = 0;
  std::string message;
};
Verdict check_request(const Request& req, const RequestLimits& limits);

// True when the request carries a payload of req.length bytes that must be
// consumed whatever the verdict (only NBD_CMD_WRITE).
inline bool has_payload(const Request& req) { return req.type == 1; }

// Our one mapping from Status to NBD error numbers.
uint32_t nbd_error(const Status& st);

const char* command_name(uint16_t type);

}  // namespace memsync::nbd
