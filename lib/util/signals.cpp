#include "util/signals.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace memsync {

SignalWatcher::SignalWatcher(std::initializer_list<int> signals, std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)) {
  sigemptyset(&set_);
  for (int s : signals) sigaddset(&set_, s);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  // A signalfd for the signals and an eventfd for our own end: the thread
  // sleeps in poll until either, so destruction is immediate (a timed wait
  // would delay every exit by up to its period).
  signal_fd_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  thread_ = std::jthread([this] {
    for (;;) {
      pollfd p[2] = {{signal_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;  // EINTR
      if (p[1].revents) return;
      signalfd_siginfo info;
      while (::read(signal_fd_.get(), &info, sizeof info) == sizeof info)
        on_signal_(static_cast<int>(info.ssi_signo));
    }
  });
}

SignalWatcher::~SignalWatcher() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof one);
  thread_.join();
}

void ignore_sigpipe() { std::signal(SIGPIPE, SIG_IGN); }

}  // namespace memsync
