#include "kernel/store_attachment.hpp"

#include <sys/socket.h>

#include "util/log.hpp"

namespace memsync::kernel {

Result<std::unique_ptr<StoreAttachment>> StoreAttachment::attach(std::shared_ptr<Store> store,
                                                                 const StoreAttachOptions& o) {
  std::unique_ptr<StoreAttachment> a(new StoreAttachment());
  a->store_ = store;
  a->server_ = std::make_unique<nbd::NbdServer>(store, o.server);
  std::vector<KernelConnection> conns;
  for (unsigned i = 0; i < std::max(1u, o.connections); ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return Status::from_errno("socketpair");
    UniqueFd ours(sv[0]), kernels(sv[1]);
    a->server_->adopt(std::move(ours));
    auto c = handshake_for_kernel(std::move(kernels), o.server.export_config.name);
    if (!c) return c.status();
    conns.push_back(std::move(c).value());
  }
  auto dev = AttachedDevice::attach(std::move(conns), o.attach);
  if (!dev) return dev.status();  // the server's ends see EOF; the destructor joins
  a->device_ = std::move(dev).value();
  return a;
}

Status StoreAttachment::detach() {
  if (detached_) return Status::ok();
  detached_ = true;
  Status st = device_ ? device_->detach() : Status::ok();
  if (!st) {
    server_->stop();  // the kernel did not let go: end our side
  }
  server_->join();
  Status synced = store_->sync();
  if (!st) return st;
  return synced;
}

StoreAttachment::~StoreAttachment() {
  if (!device_) {
    server_->stop();
    return;
  }
  Status st = detach();
  if (!st) log::warn(st.message());
}

}  // namespace memsync::kernel
