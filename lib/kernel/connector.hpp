// Connector: where a device's NBD connections come from, so that attaching
// and reconnecting (--persist) work the same for every source:
//
//   EndpointConnector  connects to unix:/tcp: endpoints or NBD URIs (with
//                      TLS for nbds://), N times.
//   CommandConnector   starts a server command (nbd-attach -- COMMAND): one
//                      connection on its stdin/stdout, or a listening unix
//                      socket passed by socket activation for N connections.
//
// Each connect() returns handshaken sockets ready for the kernel.
// Thread safety: one thread per connector.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel/attach.hpp"
#include "net/endpoint.hpp"
#include "net/tls.hpp"

namespace memsync::kernel {

class Connector {
 public:
  virtual ~Connector() = default;
  // n handshaken connections (n > 1 needs a server allowing multi-conn).
  virtual Result<std::vector<KernelConnection>> connect(unsigned n) = 0;
  // A command connector's server: its exit code once it has exited.
  virtual std::optional<int> server_exit() { return std::nullopt; }
  // True when connect() started a server process.
  virtual bool has_server() const { return false; }
  // Waits up to `limit` for a started server to exit by itself.
  std::optional<int> wait_server_exit(std::chrono::milliseconds limit);
  // Asks a started server to stop (SIGTERM, then SIGKILL after `grace`) and
  // waits for it; returns its exit code. Nothing for endpoints.
  virtual std::optional<int> stop_server(std::chrono::milliseconds /*grace*/) { return std::nullopt; }
  // For logs and the device's backend identifier.
  virtual std::string describe() const = 0;
};

class EndpointConnector : public Connector {
 public:
  EndpointConnector(Endpoint ep, std::string export_name, std::shared_ptr<TlsClientContext> tls);
  Result<std::vector<KernelConnection>> connect(unsigned n) override;
  std::string describe() const override;

 private:
  Endpoint ep_;
  std::string export_name_;
  std::shared_ptr<TlsClientContext> tls_;
};

class CommandConnector : public Connector {
 public:
  // env is added to the command's environment.
  CommandConnector(std::vector<std::string> argv, std::map<std::string, std::string> env);
  ~CommandConnector() override;  // stops a server still running, removes the socket
  // Starts the command (again, after it exited) and connects.
  Result<std::vector<KernelConnection>> connect(unsigned n) override;
  std::optional<int> server_exit() override;
  bool has_server() const override { return pid_ > 0; }
  std::optional<int> stop_server(std::chrono::milliseconds grace) override;
  std::string describe() const override;

 private:
  std::vector<std::string> argv_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::filesystem::path private_dir_;
};

}  // namespace memsync::kernel
