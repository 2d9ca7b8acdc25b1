#include "nbd/server.hpp"


#include "nbd/handshake.hpp"
#include "util/log.hpp"

namespace memsync::nbd {

NbdServer::NbdServer(std::shared_ptr<Store> store, ServerOptions opts)
    : store_(std::move(store)),
      opts_(std::move(opts)),
      acceptor_([this](Channel& ch) { return converse(ch); }, opts_.max_connections) {}

NbdServer::~NbdServer() { stop(); }

Status NbdServer::serve(Channel& ch) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Status::ok();
    single_ = &ch;
  }
  Status st = converse(ch);
  {
    std::lock_guard lock(mu_);
    single_ = nullptr;
  }
  return st;
}

Status NbdServer::converse(Channel& ch) {
  // A client that connects and then says nothing must not hold a slot.
  ch.set_read_deadline(opts_.handshake_timeout_ms);
  auto session = server_handshake(ch, opts_.export_config, *store_);
  ch.set_read_deadline(0);
  if (!session) {
    if (session.status().code() == ETIMEDOUT) return session.status().with_context("handshake");
    return session.status().is_reconnect() ? Status::ok() : session.status();
  }
  log::info("handshake done: structured replies " + std::string(session->structured_replies ? "on" : "off") +
            ", TLS " + (session->tls ? "on" : "off"));
  return run_transmission(ch, *store_, opts_.export_config, *session, opts_.transmission);
}

void NbdServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (single_) single_->stop();
  }
  acceptor_.stop();
}

void NbdServer::adopt(UniqueFd conn) { acceptor_.adopt(std::move(conn)); }

void NbdServer::join() { acceptor_.join(); }

Status NbdServer::run(std::vector<UniqueFd> listeners) {
  MEMSYNC_TRY(acceptor_.run(std::move(listeners)));
  Status st = store_->sync();
  if (!st) return st.with_context("final sync");
  return Status::ok();
}

}  // namespace memsync::nbd
