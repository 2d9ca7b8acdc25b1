// Service: how a serving tool (nbd-serve, later ram-ul and seeder) gets its
// clients, the same way in every tool:
//
//   --listen unix:PATH | tcp:HOST:PORT | fd:N(listening)   accept many clients
//   --listen fd:N (a connected socket)                     serve that one
//   socket activation (LISTEN_FDS), when --listen is absent
//   --run COMMAND without --listen: a private unix socket in $TMPDIR
//   otherwise: one connection on standard input/output (inetd style)
//
// With --run the command is started once the socket listens, with the
// environment the tool supplies ($uri, ...); when it exits, the on_exit
// callback runs (the tool stops serving) and its exit code is kept.
// Unix socket files and the private directory this object created are
// removed when it is destroyed.
//
// Thread safety: open/start on the main thread; terminate_command() from any
// thread (a signal watcher).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/channel.hpp"
#include "net/endpoint.hpp"
#include "util/status.hpp"

namespace memsync::cli {

struct ServiceSpec {
  std::optional<Endpoint> listen;   // --listen (never Stdio)
  std::optional<int> connected_fd;  // --listen fd:N naming a connected socket
  std::string run;                  // --run COMMAND
};

// Parses --listen/--run and checks they fit together. Throws UsageError.
ServiceSpec parse_service_options(const std::string& listen, const std::string& run);

class Service {
 public:
  // Binds what the spec asks for. Fails on bind/listen errors.
  static Result<std::unique_ptr<Service>> open(const ServiceSpec& spec);
  ~Service();

  // True when there is exactly one connection to serve (stdio or fd:N).
  bool single() const { return connection_fds_.first.valid(); }
  std::unique_ptr<Channel> take_connection();
  std::vector<UniqueFd> take_listeners() { return std::move(listeners_); }
  // Where the first listener listens (for logs and --run's variables).
  const std::optional<Endpoint>& address() const { return address_; }

  // Starts --run's command (if any) with `env` added to the environment.
  Status start_command(const std::map<std::string, std::string>& env, std::function<void()> on_exit);
  bool has_command() const { return !spec_.run.empty(); }
  // Sends SIGTERM to the command if it is still running.
  void terminate_command();
  // Waits for the command; its exit code (128+N if killed by signal N).
  int command_exit_code();

 private:
  Service() = default;
  ServiceSpec spec_;
  std::vector<UniqueFd> listeners_;
  std::pair<UniqueFd, UniqueFd> connection_fds_;
  std::optional<Endpoint> address_;
  std::vector<std::string> socket_files_;  // to unlink at the end
  std::filesystem::path private_dir_;

  std::mutex child_mu_;  // guards child_ against reuse after reaping
  pid_t child_ = -1;
  int child_code_ = 0;
  std::jthread waiter_;
};

// The NBD URI that reaches `ep` ("nbd+unix:///NAME?socket=PATH",
// "nbd://HOST:PORT/NAME"; nbds schemes when tls).
std::string nbd_uri(const Endpoint& ep, const std::string& export_name, bool tls);

}  // namespace memsync::cli
