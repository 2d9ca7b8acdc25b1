#include "kernel/connector.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <thread>

#include "util/log.hpp"
#include "util/process.hpp"

namespace memsync::kernel {

std::optional<int> Connector::wait_server_exit(std::chrono::milliseconds limit) {
  if (!has_server()) return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto code = server_exit();
    if (code || std::chrono::steady_clock::now() >= deadline) return code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

EndpointConnector::EndpointConnector(Endpoint ep, std::string export_name, std::shared_ptr<TlsClientContext> tls)
    : ep_(std::move(ep)), export_name_(std::move(export_name)), tls_(std::move(tls)) {}

Result<std::vector<KernelConnection>> EndpointConnector::connect(unsigned n) {
  std::vector<KernelConnection> out;
  for (unsigned i = 0; i < n; ++i) {
    auto fd = connect_endpoint(ep_);
    if (!fd) return fd.status();
    auto c = handshake_for_kernel(std::move(fd).value(), export_name_, tls_.get());
    if (!c) return c.status();
    if (i == 0) MEMSYNC_TRY(check_multi_conn(c->info, n));
    out.push_back(std::move(c).value());
  }
  return out;
}

std::string EndpointConnector::describe() const {
  std::string s = ep_.to_string();
  if (!export_name_.empty()) s += " export " + export_name_;
  return s;
}

namespace {
int null_fd() {
  static int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}
}  // namespace

CommandConnector::CommandConnector(std::vector<std::string> argv, std::map<std::string, std::string> env)
    : argv_(std::move(argv)), env_(std::move(env)) {}

CommandConnector::~CommandConnector() {
  if (pid_ > 0 && !exit_code_) (void)stop_server(std::chrono::seconds(5));
  if (!private_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(private_dir_, ec);
  }
}

Result<std::vector<KernelConnection>> CommandConnector::connect(unsigned n) {
  if (pid_ > 0 && !exit_code_) return Status::invalid("the server command is still running");
  pid_ = -1;
  exit_code_.reset();
  SpawnSpec spec;
  spec.argv = argv_;
  spec.env = env_;
  spec.new_process_group = true;  // our signals decide when it stops
  std::vector<UniqueFd> ours;
  UniqueFd listener;
  if (n == 1) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return Status::from_errno("socketpair");
    ours.emplace_back(sv[0]);
    UniqueFd theirs(sv[1]);
    spec.stdin_fd = spec.stdout_fd = theirs.get();
    auto pid = spawn_process(spec);
    if (!pid) return pid.status();
    pid_ = *pid;
  } else {
    // A private directory keeps other users away from the socket.
    if (private_dir_.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/nbd-attach.XXXXXX";
      if (!::mkdtemp(tmpl.data())) return Status::from_errno("create a directory in " + tmpl);
      private_dir_ = tmpl;
    }
    std::string path = (private_dir_ / "socket").string();
    ::unlink(path.c_str());
    auto ep = parse_endpoint("unix:" + path);
    if (!ep) return ep.status();
    auto l = listen_endpoint(*ep, static_cast<int>(n) + 8);
    if (!l) return l.status();
    listener = std::move(l->front());
    // The server's stdout goes to our stderr (its logs belong there), and
    // it must not read our stdin.
    spec.stdin_fd = null_fd();
    spec.stdout_fd = STDERR_FILENO;
    spec.pass_fds = {listener.get()};
    spec.socket_activation = true;
    auto pid = spawn_process(spec);
    if (!pid) return pid.status();
    pid_ = *pid;
    for (unsigned i = 0; i < n; ++i) {
      auto fd = connect_endpoint(*ep);
      if (!fd) return fd.status();
      ours.push_back(std::move(fd).value());
    }
  }
  std::vector<KernelConnection> out;
  for (auto& fd : ours) {
    auto c = handshake_for_kernel(std::move(fd), "");
    if (!c) {
      // A command that died says more than the closed socket.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (auto code = server_exit())
        return Status::error(ECONNRESET, "'" + argv_[0] + "' exited with status " + std::to_string(*code) +
                                             " during the handshake");
      return c.status();
    }
    if (out.empty()) MEMSYNC_TRY(check_multi_conn(c->info, n));
    out.push_back(std::move(c).value());
  }
  return out;
}

std::optional<int> CommandConnector::server_exit() {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  auto code = poll_exit_code(pid_);
  if (code && *code) exit_code_ = **code;
  return exit_code_;
}

std::optional<int> CommandConnector::stop_server(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return std::nullopt;
  if (server_exit()) return exit_code_;
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (!server_exit()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      log::warn("'" + argv_[0] + "' did not stop on SIGTERM; killing it");
      ::kill(pid_, SIGKILL);
      auto code = wait_exit_code(pid_);
      exit_code_ = code ? *code : 137;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code_;
}

std::string CommandConnector::describe() const {
  std::string s;
  for (auto& a : argv_) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace memsync::kernel
