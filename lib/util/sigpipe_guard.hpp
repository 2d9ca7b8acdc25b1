// SigpipeGuard: writes by libraries we cannot give MSG_NOSIGNAL (OpenSSL,
// hiredis) fail with EPIPE instead of killing a process that does not
// ignore SIGPIPE (tools do, through run_main; tests and embedders may not).
//
// Blocks SIGPIPE in this thread for the guard's lifetime, then discards a
// SIGPIPE that became pending meanwhile (the technique libcurl and OpenSSL
// users use; a socket option for it exists only on BSD).
// Thread safety: per thread; create it on the thread that writes.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <ctime>

namespace memsync {

class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    was_pending_ = pending();
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    const int saved = errno;
    if (!was_pending_ && pending()) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved;
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  static bool pending() {
    sigset_t set;
    sigemptyset(&set);
    return sigpending(&set) == 0 && sigismember(&set, SIGPIPE) == 1;
  }
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

}  // namespace memsync
