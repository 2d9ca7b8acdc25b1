// WireServer: exposes a store to memsync wire protocol v1 clients
// (man/memsync-wire.7), one session per connection.
//
// A session negotiates HELLO, then one reader takes requests off the
// connection and a pool of workers executes them, URGENT requests before
// queued background ones; replies go out as they complete, each frame
// whole (a write lock). At most max_inflight requests are queued: beyond
// that the reader stops reading, and TCP pushes back on the client.
// Unknown request types and features not negotiated get ENOTSUP and the
// session goes on; malformed frames end it (protocol error, no reply).
// When a connection is lost, its queued requests that have not started are
// dropped: the client sends them again on its next connection, and the old
// copy must not run after the new one (and a later write).
// With TLS, each connection's handshake runs first (on its own thread,
// bounded by a 10 s deadline), then the session as above.
//
// Thread safety: serve() runs one connection on the calling thread (plus
// its workers); stop() may be called from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "backend/store.hpp"
#include "net/acceptor.hpp"
#include "net/channel.hpp"
#include "net/tls.hpp"
#include "wire/frame.hpp"

namespace memsync::wire {

struct WireServerOptions {
  uint64_t features = kFeaturesKnown;  // offered to clients
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  unsigned threads = 8;                // workers per connection
  unsigned max_connections = 64;
  bool read_only = false;              // refuse writes even if the store takes them
  std::shared_ptr<TlsServerContext> tls;  // set: every connection speaks TLS
};

class Session;

class WireServer {
 public:
  WireServer(std::shared_ptr<Store> store, WireServerOptions opts);

  ~WireServer();

  // One connection until the client closes it (ok) or breaks the protocol.
  Status serve(Channel& ch);
  // Accepts on listening sockets until stop(); then syncs the store.
  Status run(std::vector<UniqueFd> listeners);
  // Serves a connected socket on a thread of its own.
  void adopt(UniqueFd conn);
  // Stops every session: no further requests are read; queued ones finish.
  void stop();

 private:
  std::shared_ptr<Store> store_;
  WireServerOptions opts_;
  uint64_t store_id_ = 0;  // HELLO's store_id: random for volatile stores
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<Channel*> channels_;  // guarded by mu_
  struct Live {
    uint64_t client_id;
    std::shared_ptr<Session> session;
  };
  std::vector<Live> sessions_;      // guarded by mu_
  Acceptor acceptor_;               // last: its threads use the members above
};

}  // namespace memsync::wire
