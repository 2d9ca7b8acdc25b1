#include "util/signals.hpp"

#include <ctime>

namespace memsync {

SignalWatcher::SignalWatcher(std::initializer_list<int> signals, std::function<void(int)> on_signal)
    : on_signal_(std::move(on_signal)) {
  sigemptyset(&set_);
  for (int s : signals) sigaddset(&set_, s);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  thread_ = std::jthread([this](std::stop_token stop) {
    while (!stop.stop_requested()) {
      timespec ts{0, 100'000'000};  // wake up now and then to notice stop
      int sig = sigtimedwait(&set_, nullptr, &ts);
      if (sig > 0) on_signal_(sig);
    }
  });
}

SignalWatcher::~SignalWatcher() {
  thread_.request_stop();
  thread_.join();
}

void ignore_sigpipe() { std::signal(SIGPIPE, SIG_IGN); }

}  // namespace memsync
