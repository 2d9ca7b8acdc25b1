// NbdServer: serves one store as one NBD export to many clients.
//
// serve() handles a single connection on the calling thread (inetd style,
// stdin/stdout). run() accepts on listening sockets until stop(), each
// connection on its own thread with its own workers (see transmission.hpp).
// stop() starts an orderly shutdown: no new connections, every connection
// stops reading, in-flight requests complete and are answered, then run()
// syncs the store and returns.
//
// Thread safety: stop() may be called from any thread, any number of times;
// serve() and run() from one thread each.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "backend/store.hpp"
#include "nbd/export_config.hpp"
#include "nbd/transmission.hpp"
#include "net/acceptor.hpp"
#include "net/channel.hpp"
#include "util/fd.hpp"

namespace memsync::nbd {

struct ServerOptions {
  ExportConfig export_config;
  TransmissionOptions transmission;
  unsigned max_connections = 64;  // further clients are accepted and closed at once
  unsigned handshake_timeout_ms = 10000;  // a client must finish the handshake within this; 0 = no limit
};

class NbdServer {
 public:
  NbdServer(std::shared_ptr<Store> store, ServerOptions opts);
  ~NbdServer();

  // One connection; returns when it ends. ok for an orderly end.
  Status serve(Channel& ch);
  // REQUIRES: at least one listener. Returns after stop() and shutdown.
  Status run(std::vector<UniqueFd> listeners);
  void stop();
  // Serves an already connected socket (one end of a socketpair, say) on a
  // thread of its own, as if run() had accepted it. Works with or without
  // run(); the destructor joins the thread.
  void adopt(UniqueFd conn);
  // Waits until every adopted or accepted connection has ended by itself
  // (for callers that end connections from the other side, not by stop()).
  void join();

 private:
  // Handshake then transmission on one channel; ok for an orderly end.
  Status converse(Channel& ch);

  std::shared_ptr<Store> store_;
  ServerOptions opts_;
  std::mutex mu_;  // guards single_ and stopping_
  bool stopping_ = false;
  Channel* single_ = nullptr;  // serve()'s connection
  Acceptor acceptor_;          // last: its threads use the members above
};

}  // namespace memsync::nbd
