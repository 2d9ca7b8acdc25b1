// StoreAttachment: an in-process store as a kernel block device, the
// "direct mount" without a network: the NBD server runs on threads of this
// process and talks to the kernel over socketpairs, one per connection.
// ram-dl, `seeder --attach` and tapisk are built on it.
//
// Because the server lives in the caller's process, memory locking
// (mlockall, see util/io_priority.hpp) covers it, which swap on the device
// needs: a server that must page in its own code to answer a swap-out
// deadlocks.
//
// Thread safety: one owner; detach() may be called from a signal watcher.
#pragma once

#include <memory>

#include "backend/store.hpp"
#include "kernel/attach.hpp"
#include "nbd/server.hpp"

namespace memsync::kernel {

struct StoreAttachOptions {
  AttachOptions attach;
  nbd::ServerOptions server;
  unsigned connections = 1;  // > 1 needs a store that allows multi-conn
};

class StoreAttachment {
 public:
  static Result<std::unique_ptr<StoreAttachment>> attach(std::shared_ptr<Store> store,
                                                         const StoreAttachOptions& o);
  // Detaches (if still attached), ends the server threads, syncs the store.
  ~StoreAttachment();

  AttachedDevice& device() { return *device_; }
  // Disconnects the device, waits for the server to finish the requests the
  // kernel sent, and syncs the store.
  Status detach();

 private:
  StoreAttachment() = default;
  std::shared_ptr<Store> store_;
  std::unique_ptr<nbd::NbdServer> server_;
  std::unique_ptr<AttachedDevice> device_;
  bool detached_ = false;
};

}  // namespace memsync::kernel
