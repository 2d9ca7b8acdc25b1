// The NBD transmission phase: requests in, replies out, concurrently.
//
// `threads` workers share one connection in leader/follower style (as
// nbdkit does): whoever holds the read lock reads one request and its
// payload, releases the lock, executes the request against the store and
// writes the whole reply with one gathered write. So requests run
// concurrently, replies go out in completion order, and the bytes of two
// replies never interleave. In-flight requests are bounded by `threads`,
// and each worker's buffer by the maximum payload, so memory is bounded.
//
// Ends when the client sends DISC or disconnects, when the channel is
// stopped (server shutdown: in-flight requests still complete and are
// answered), or on a protocol violation (bad magic: hard disconnect).
// Returns ok for the orderly ends and the violation otherwise.
// Thread safety: call once per channel; it starts and joins its workers.
#pragma once

#include "backend/store.hpp"
#include "nbd/export_config.hpp"
#include "net/channel.hpp"

namespace memsync::nbd {

struct TransmissionOptions {
  unsigned threads = 16;  // concurrent requests per connection
};

Status run_transmission(Channel& ch, Store& store, const ExportConfig& cfg, const Session& session,
                        const TransmissionOptions& opts);

}  // namespace memsync::nbd
