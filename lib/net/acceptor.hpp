// Acceptor: the connection loop every serving tool shares (nbd-serve's NBD
// server, ram-ul's wire server, later seeder): accept on listening sockets,
// run each connection on its own thread, refuse beyond a limit, and stop in
// order (no new connections; every connection's reads are woken so it can
// finish what it holds; threads joined).
//
// Thread safety: run() on one thread; adopt(), stop() and join() from any.
#pragma once

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "net/channel.hpp"
#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync {

class Acceptor {
 public:
  // `converse` serves one connection; ok for an orderly end.
  using Converse = std::function<Status(Channel&)>;
  Acceptor(Converse converse, unsigned max_connections);
  ~Acceptor();  // stop(), then joins every connection thread

  // REQUIRES: at least one listener. Returns after stop(), once every
  // connection has ended.
  Status run(std::vector<UniqueFd> listeners);
  // Serves an already connected socket (one end of a socketpair, say) as if
  // run() had accepted it; with or without run().
  void adopt(UniqueFd conn);
  void stop();
  // Waits until every connection has ended by itself.
  void join();

 private:
  struct Connection {
    std::shared_ptr<Channel> channel;
    std::jthread thread;
    std::atomic<bool> finished{false};
  };
  void start(UniqueFd conn);
  void reap(bool all);

  Converse converse_;
  unsigned max_connections_;
  UniqueFd wake_;  // eventfd: stop() and finished connections wake run()
  std::atomic<bool> stopping_{false};
  std::atomic<unsigned> active_{0};
  std::mutex mu_;  // guards conns_
  std::list<Connection> conns_;
};

}  // namespace memsync
