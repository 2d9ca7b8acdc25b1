// TLS through OpenSSL: server credentials and the per-connection relay.
//
// OpenSSL forbids concurrent reads and writes on one SSL object, while our
// protocol engines read on one thread and write replies from many. So each
// TLS connection gets one owner: a relay thread that alone touches the SSL
// object and moves bytes between it and a local socketpair. The engine
// talks plaintext on the other end of the pair, exactly as on a plain
// socket. The cost is one extra copy per byte, small next to the cipher.
//
// Credentials: an X.509 certificate and key (PEM), optionally a CA file that
// client certificates must chain to (then clients must present one), and/or
// a PSK file of "identity:hexkey" lines, the format nbdkit and qemu use.
// TLS 1.2 is the minimum.
//
// Thread safety: a TlsServerContext is immutable after create() and may be
// shared by all connections.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "util/fd.hpp"
#include "util/status.hpp"

typedef struct ssl_ctx_st SSL_CTX;

namespace memsync {

struct TlsServerOptions {
  std::string cert_file;  // PEM certificate chain of this server
  std::string key_file;   // PEM private key for cert_file
  std::string ca_file;    // if set, clients must present a certificate signed by it
  std::string psk_file;   // if set, "identity:hexkey" lines accepted as pre-shared keys
};

class TlsServerContext {
 public:
  static Result<std::shared_ptr<TlsServerContext>> create(const TlsServerOptions& opts);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // Runs the server side of a TLS handshake on the descriptors (the same
  // socket twice, or stdin and stdout) and starts the relay thread. On
  // success returns the plaintext end, and the relay as an opaque owner:
  // keep it alive as long as the plaintext end is used; destroying it waits
  // for the relay, which ends once the plaintext end is closed.
  struct Accepted {
    UniqueFd plain;
    std::shared_ptr<void> relay;
  };
  Result<Accepted> accept(UniqueFd in, UniqueFd out) const;

  // Looks up a PSK identity (used by OpenSSL's callback).
  const std::string* find_psk(const std::string& identity) const;

 private:
  TlsServerContext() = default;
  SSL_CTX* ctx_ = nullptr;
  std::map<std::string, std::string> psk_;  // identity -> raw key bytes
};

// The client side, for tools that connect to TLS servers (nbd-attach with
// nbds:// URIs). The server's certificate is verified against ca_file (or
// the system's store when empty) and must name `hostname`, unless a PSK is
// used instead, which authenticates both sides.
struct TlsClientOptions {
  std::string ca_file;       // CA for the server's certificate ("" = system default)
  std::string cert_file;     // our certificate, for servers that require one
  std::string key_file;
  std::string psk_file;      // "identity:hexkey" lines
  std::string psk_identity;  // which line; "" = the first
  std::string hostname;      // checked against the server's certificate; SNI
  bool verify_peer = true;
};

class TlsClientContext {
 public:
  static Result<std::shared_ptr<TlsClientContext>> create(const TlsClientOptions& opts);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // Runs the client side of the handshake on sock and starts the relay
  // (see TlsServerContext::accept for the returned pair).
  Result<TlsServerContext::Accepted> connect(UniqueFd sock) const;

  const std::string& psk_identity() const { return psk_identity_; }
  const std::string& psk_key() const { return psk_key_; }

 private:
  TlsClientContext() = default;
  SSL_CTX* ctx_ = nullptr;
  std::string hostname_;
  bool verify_peer_ = true;
  std::string psk_identity_, psk_key_;
};

// Reads an "identity:hexkey" file. Errors name the file and line.
Result<std::map<std::string, std::string>> read_psk_file(const std::string& path);

}  // namespace memsync
