// RemoteTarget: where a memsync wire server is and how to reach it (plain
// or TLS), and dial(), which makes one new connection to it. RemoteStore
// dials again through it after a lost connection.
//
// Backend spec form (memsync(7)):
//   remote:unix:PATH | remote:tcp:HOST:PORT [?PARAM=VALUE&...]
//   tls=yes                 TLS with the system's CA store
//   tls-ca=FILE             CA for the server's certificate (implies tls)
//   tls-cert=FILE, tls-key=FILE   our certificate, for servers that ask
//   tls-psk=FILE            pre-shared keys, "identity:hexkey" lines
//   tls-identity=NAME       which PSK identity (default: the file's first)
//   tls-hostname=NAME       name the certificate must carry (default: HOST)
//   tls-verify=no           do not verify the server's certificate
//   compress=no             do not ask for LZ4
//   timeout=DURATION        how long requests wait for a lost connection to
//                           come back before they fail (default 60s; 0 =
//                           forever, for swap)
//
// Thread safety: a RemoteTarget is a value; dial() may run on any thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "net/channel.hpp"
#include "net/endpoint.hpp"
#include "net/tls.hpp"
#include "util/status.hpp"

namespace memsync {
struct BackendSpec;
}

namespace memsync::wire {

struct RemoteTarget {
  Endpoint endpoint;                    // unix or tcp
  std::optional<TlsClientOptions> tls;  // set: speak TLS from the first byte
  std::string to_string() const;        // "tcp:host:1337" (+ " (TLS)")
};

// One connection: the plaintext channel and, with TLS, the relay that owns
// the TLS session (keep it as long as the channel).
struct Connection {
  std::shared_ptr<void> relay;        // declared first: outlives the channel
  std::unique_ptr<Channel> channel;   // (the relay ends once this is closed)
};

// Connects and, with TLS, runs the client handshake (bounded: a server that
// accepts and says nothing fails after the HELLO deadline, not never).
Result<Connection> dial(const RemoteTarget& target);

}  // namespace memsync::wire
