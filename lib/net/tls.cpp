#include "net/tls.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "util/hex.hpp"
#include "util/log.hpp"
#include "util/sigpipe_guard.hpp"

namespace memsync {
namespace {

std::string openssl_error(const std::string& what) {
  std::string msg = what;
  unsigned long e;
  bool first = true;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += first ? ": " : "; ";
    msg += buf;
    first = false;
  }
  if (first) msg += ": unknown TLS error";
  return msg;
}


unsigned int psk_server_callback(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_len) {
  auto* self = static_cast<const TlsServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!self || !identity) return 0;
  const std::string* key = self->find_psk(identity);
  if (!key || key->size() > max_len) {
    log::warn(std::string("TLS: unknown PSK identity '") + identity + "'");
    return 0;
  }
  std::memcpy(psk, key->data(), key->size());
  return static_cast<unsigned int>(key->size());
}

unsigned int psk_client_callback(SSL* ssl, const char* /*hint*/, char* identity, unsigned int max_identity_len,
                                 unsigned char* psk, unsigned int max_psk_len) {
  auto* self = static_cast<const TlsClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!self) return 0;
  const std::string& id = self->psk_identity();
  const std::string& key = self->psk_key();
  if (id.size() + 1 > max_identity_len || key.size() > max_psk_len) return 0;
  std::memcpy(identity, id.c_str(), id.size() + 1);
  std::memcpy(psk, key.data(), key.size());
  return static_cast<unsigned int>(key.size());
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Bounds a blocking handshake: a peer that connects and then says nothing
// fails it after 10 s instead of holding a thread forever. (The relay runs
// non-blocking afterwards, where these timeouts do not apply; on a pipe
// setsockopt fails harmlessly.)
void limit_handshake_time(int fd) {
  timeval tv{10, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// The one owner of a TLS connection: moves bytes both ways until both
// directions are finished. Every SSL call happens on its thread.
class Relay {
 public:
  Relay(SSL* ssl, UniqueFd in, UniqueFd out, UniqueFd plain)
      : ssl_(ssl), in_(std::move(in)), out_(std::move(out)), plain_(std::move(plain)) {
    thread_ = std::jthread([this] { run(); });
  }
  ~Relay() {
    thread_.join();
    SSL_free(ssl_);
  }

 private:
  int net_r() const { return in_.get(); }
  int net_w() const { return out_.valid() ? out_.get() : in_.get(); }

  void run() {
    SigpipeGuard no_sigpipe;  // SSL_write to a vanished peer: EPIPE, not death
    set_nonblocking(net_r());
    set_nonblocking(net_w());
    set_nonblocking(plain_.get());
    std::vector<char> down(64 * 1024), up(64 * 1024);  // net->plain, plain->net
    size_t down_len = 0, down_off = 0, up_len = 0, up_off = 0;
    bool net_eof = false, plain_eof = false, failed = false;
    while (!failed) {
      bool progress = false;
      short want_net_r = 0, want_net_w = 0, want_plain = 0;
      // Network to plaintext.
      if (!net_eof && down_len == 0) {
        int r = SSL_read(ssl_, down.data(), static_cast<int>(down.size()));
        if (r > 0) {
          down_len = static_cast<size_t>(r);
          down_off = 0;
          progress = true;
        } else {
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_READ) want_net_r = POLLIN;
          else if (e == SSL_ERROR_WANT_WRITE) want_net_w = POLLOUT;
          else {
            if (e != SSL_ERROR_ZERO_RETURN && e != SSL_ERROR_SYSCALL) log::info(openssl_error("TLS read"));
            ERR_clear_error();
            net_eof = true;
            ::shutdown(plain_.get(), SHUT_WR);
            progress = true;
          }
        }
      }
      if (down_len > 0) {
        ssize_t n = ::write(plain_.get(), down.data() + down_off, down_len - down_off);
        if (n > 0) {
          down_off += static_cast<size_t>(n);
          if (down_off == down_len) down_len = 0;
          progress = true;
        } else if (n < 0 && errno == EAGAIN) {
          want_plain |= POLLOUT;
        } else {
          failed = true;  // our engine went away
        }
      }
      // Plaintext to network.
      if (!plain_eof && up_len == 0) {
        ssize_t n = ::read(plain_.get(), up.data(), up.size());
        if (n > 0) {
          up_len = static_cast<size_t>(n);
          up_off = 0;
          progress = true;
        } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          plain_eof = true;
          progress = true;
        } else {
          want_plain |= POLLIN;
        }
      }
      if (up_len > 0) {
        int r = SSL_write(ssl_, up.data() + up_off, static_cast<int>(up_len - up_off));
        if (r > 0) {
          up_off += static_cast<size_t>(r);
          if (up_off == up_len) up_len = 0;
          progress = true;
        } else {
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_WRITE) want_net_w = POLLOUT;
          else if (e == SSL_ERROR_WANT_READ) want_net_r = POLLIN;
          else {
            ERR_clear_error();
            failed = true;
          }
        }
      }
      if (plain_eof && up_len == 0) {
        // The engine is done: close TLS properly (best effort) and stop.
        (void)SSL_shutdown(ssl_);
        ERR_clear_error();
        break;
      }
      if (progress) continue;
      pollfd p[3];
      nfds_t n = 0;
      if (net_r() == net_w()) {
        p[n++] = {net_r(), static_cast<short>(want_net_r | want_net_w), 0};
      } else {
        if (want_net_r) p[n++] = {net_r(), want_net_r, 0};
        if (want_net_w) p[n++] = {net_w(), want_net_w, 0};
      }
      p[n++] = {plain_.get(), want_plain, 0};
      if (::poll(p, n, -1) < 0 && errno != EINTR) failed = true;
    }
    // Wake the engine if we stopped early, then let our descriptors close.
    ::shutdown(plain_.get(), SHUT_RDWR);
  }

  SSL* ssl_;
  UniqueFd in_, out_, plain_;
  std::jthread thread_;
};

}  // namespace

Result<std::map<std::string, std::string>> read_psk_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::from_errno("open PSK file " + path);
  std::map<std::string, std::string> keys;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    auto colon = line.find(':');
    std::string where = path + ":" + std::to_string(lineno);
    if (colon == std::string::npos || colon == 0) return Status::invalid(where + ": expected identity:hexkey");
    std::string hex = line.substr(colon + 1);
    if (hex.empty() || hex.size() % 2 != 0) return Status::invalid(where + ": the key must be an even number of hex digits");
    std::string key;
    for (size_t i = 0; i < hex.size(); i += 2) {
      int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
      if (hi < 0 || lo < 0) return Status::invalid(where + ": the key is not hexadecimal");
      key.push_back(static_cast<char>(hi * 16 + lo));
    }
    keys[line.substr(0, colon)] = key;
  }
  if (keys.empty()) return Status::invalid(path + ": no identity:hexkey lines");
  return keys;
}

Result<std::shared_ptr<TlsServerContext>> TlsServerContext::create(const TlsServerOptions& opts) {
  std::shared_ptr<TlsServerContext> self(new TlsServerContext());
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return Status::io(openssl_error("create TLS context"));
  self->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_app_data(ctx, self.get());
  // Needed once client certificates are verified, or sessions (and TLS 1.3
  // PSK handshakes) fail with "session id context uninitialized".
  static const unsigned char kSessionContext[] = "memsync";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  if (opts.cert_file.empty() != opts.key_file.empty())
    return Status::invalid("TLS needs both a certificate and its key");
  if (opts.cert_file.empty() && opts.psk_file.empty())
    return Status::invalid("TLS needs a certificate and key, or a PSK file");
  if (!opts.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, opts.cert_file.c_str()) != 1)
      return Status::invalid(openssl_error("load certificate " + opts.cert_file));
    if (SSL_CTX_use_PrivateKey_file(ctx, opts.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return Status::invalid(openssl_error("load key " + opts.key_file));
    if (SSL_CTX_check_private_key(ctx) != 1)
      return Status::invalid(openssl_error("key " + opts.key_file + " does not match the certificate"));
  }
  if (!opts.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, opts.ca_file.c_str(), nullptr) != 1)
      return Status::invalid(openssl_error("load CA " + opts.ca_file));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  if (!opts.psk_file.empty()) {
    auto keys = read_psk_file(opts.psk_file);
    if (!keys) return keys.status();
    self->psk_ = std::move(keys).value();
    SSL_CTX_set_psk_server_callback(ctx, psk_server_callback);
    // PSK suites are not in OpenSSL's default TLS 1.2 list; TLS 1.3 uses the
    // callback above for its external PSKs.
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK:DHE-PSK:PSK:HIGH:!aNULL:!eNULL") != 1)
      return Status::invalid(openssl_error("set PSK cipher list"));
  }
  return self;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

const std::string* TlsServerContext::find_psk(const std::string& identity) const {
  auto it = psk_.find(identity);
  return it == psk_.end() ? nullptr : &it->second;
}

// Starts the relay for an established session.
static Result<TlsServerContext::Accepted> start_relay(SSL* ssl, UniqueFd in, UniqueFd out) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    SSL_free(ssl);
    return Status::from_errno("socketpair for TLS relay");
  }
  auto relay = std::make_shared<Relay>(ssl, std::move(in), std::move(out), UniqueFd(pair[1]));
  return TlsServerContext::Accepted{UniqueFd(pair[0]), std::static_pointer_cast<void>(relay)};
}

Result<std::shared_ptr<TlsClientContext>> TlsClientContext::create(const TlsClientOptions& opts) {
  std::shared_ptr<TlsClientContext> self(new TlsClientContext());
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return Status::io(openssl_error("create TLS context"));
  self->ctx_ = ctx;
  self->hostname_ = opts.hostname;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_app_data(ctx, self.get());
  if (opts.cert_file.empty() != opts.key_file.empty())
    return Status::invalid("a TLS client certificate needs its key, and the other way round");
  if (!opts.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, opts.cert_file.c_str()) != 1)
      return Status::invalid(openssl_error("load certificate " + opts.cert_file));
    if (SSL_CTX_use_PrivateKey_file(ctx, opts.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return Status::invalid(openssl_error("load key " + opts.key_file));
  }
  if (!opts.psk_file.empty()) {
    auto keys = read_psk_file(opts.psk_file);
    if (!keys) return keys.status();
    if (keys->empty()) return Status::invalid(opts.psk_file + ": no key");
    auto it = opts.psk_identity.empty() ? keys->begin() : keys->find(opts.psk_identity);
    if (it == keys->end()) return Status::invalid(opts.psk_file + ": no key for identity '" + opts.psk_identity + "'");
    self->psk_identity_ = it->first;
    self->psk_key_ = it->second;
    SSL_CTX_set_psk_client_callback(ctx, psk_client_callback);
    // Only the key may authenticate the server: no certificate suites in
    // TLS 1.2, and a certificate in TLS 1.3 (a server that did not take our
    // key and fell back to one) fails the handshake. Otherwise any server
    // with any certificate would do.
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK:DHE-PSK:PSK:!aNULL:!eNULL") != 1)
      return Status::invalid(openssl_error("set PSK cipher list"));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX* store) {
      X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
      return 0;
    });
    self->verify_peer_ = false;  // no host name check: there is no certificate
  } else {
    self->verify_peer_ = opts.verify_peer;
    if (opts.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx) != 1
                             : SSL_CTX_load_verify_locations(ctx, opts.ca_file.c_str(), nullptr) != 1)
      return Status::invalid(openssl_error("load CA " + (opts.ca_file.empty() ? "(system default)" : opts.ca_file)));
    SSL_CTX_set_verify(ctx, self->verify_peer_ ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  }
  return self;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

Result<TlsServerContext::Accepted> TlsClientContext::connect(UniqueFd sock) const {
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return Status::io(openssl_error("create TLS session"));
  SSL_set_fd(ssl, sock.get());
  if (!hostname_.empty()) {
    SSL_set_tlsext_host_name(ssl, hostname_.c_str());
    if (verify_peer_ && SSL_set1_host(ssl, hostname_.c_str()) != 1) {
      SSL_free(ssl);
      return Status::io(openssl_error("set the expected TLS host name"));
    }
  }
  limit_handshake_time(sock.get());
  SigpipeGuard no_sigpipe;
  if (SSL_connect(ssl) != 1) {
    std::string why = openssl_error("TLS handshake with the server");
    long v = SSL_get_verify_result(ssl);
    if (!psk_key_.empty())
      why += " (the server did not prove the pre-shared key: a wrong key, an unknown identity, or a server "
             "with a certificate instead)";
    else if (v != X509_V_OK) why += std::string(" (certificate: ") + X509_verify_cert_error_string(v) + ")";
    else why += " (does the server want a pre-shared key?)";
    SSL_free(ssl);
    return Status::error(EACCES, why);
  }
  return start_relay(ssl, std::move(sock), UniqueFd());
}

Result<TlsServerContext::Accepted> TlsServerContext::accept(UniqueFd in, UniqueFd out) const {
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return Status::io(openssl_error("create TLS session"));
  int wfd = out.valid() ? out.get() : in.get();
  SSL_set_rfd(ssl, in.get());
  SSL_set_wfd(ssl, wfd);
  limit_handshake_time(in.get());
  if (out.valid()) limit_handshake_time(out.get());
  SigpipeGuard no_sigpipe;  // the alert for a refused client may hit a closed socket
  int r = SSL_accept(ssl);
  if (r != 1) {
    // EACCES, not a connection error: a refused handshake deserves a warning.
    Status st = Status::error(EACCES, openssl_error("TLS handshake"));
    SSL_free(ssl);
    return st;
  }
  return start_relay(ssl, std::move(in), std::move(out));
}

}  // namespace memsync
