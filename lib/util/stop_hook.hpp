// StopHook: a stop request that may arrive before there is anything to stop.
//
// A signal can come at any moment after the SignalWatcher is installed,
// including before the server exists. request() records it and calls the
// current target if there is one; set_target() calls the new target at once
// when a request is already pending, so no stop is ever lost.
// Thread safety: all methods may be called from any thread.
#pragma once

#include <functional>
#include <mutex>

namespace memsync {

class StopHook {
 public:
  void request() {
    std::lock_guard lock(mu_);
    requested_ = true;
    if (target_) target_();
  }
  void set_target(std::function<void()> target) {
    std::lock_guard lock(mu_);
    target_ = std::move(target);
    if (requested_ && target_) target_();
  }
  bool requested() const {
    std::lock_guard lock(mu_);
    return requested_;
  }

 private:
  mutable std::mutex mu_;
  bool requested_ = false;
  std::function<void()> target_;
};

}  // namespace memsync
