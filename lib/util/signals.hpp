// SignalWatcher: turns asynchronous signals into a callback on a thread.
//
// Construct it in main() BEFORE starting any thread: it blocks the signals
// in the calling thread, so every thread started later inherits the mask and
// only the watcher's thread receives them (via a signalfd). The callback
// runs on that thread, where it may take locks and call stop() methods,
// which a signal handler could not. Children spawned with spawn_process()
// get the default mask back.
// Thread safety: construct and destroy on the main thread.
#pragma once

#include <csignal>
#include <functional>
#include <initializer_list>
#include <thread>

#include "util/fd.hpp"

namespace memsync {

class SignalWatcher {
 public:
  SignalWatcher(std::initializer_list<int> signals, std::function<void(int)> on_signal);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  sigset_t set_;
  UniqueFd signal_fd_, wake_fd_;
  std::function<void(int)> on_signal_;
  std::jthread thread_;
};

// SIGPIPE is ignored process-wide: a peer that goes away is an EPIPE error
// on the write, handled where it happens.
void ignore_sigpipe();

}  // namespace memsync
