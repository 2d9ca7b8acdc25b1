#include "cli/service.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cli/cli.hpp"
#include "util/percent.hpp"
#include "util/process.hpp"

namespace memsync::cli {
namespace {

// Removes LISTEN_* so that a --run command does not inherit them when we
// did not use them (--listen given).
void clear_activation_env() {
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
}

}  // namespace

std::string nbd_uri(const Endpoint& ep, const std::string& name, bool tls) {
  std::string scheme = tls ? "nbds" : "nbd";
  if (ep.kind == Endpoint::Kind::Unix)
    return scheme + "+unix:///" + percent_encode(name) + "?socket=" + percent_encode(ep.path);
  std::string host = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
  return scheme + "://" + host + ":" + std::to_string(ep.port) + "/" + percent_encode(name);
}

ServiceSpec parse_service_options(const std::string& listen, const std::string& run) {
  ServiceSpec spec;
  spec.run = run;
  if (listen.empty()) return spec;
  Endpoint ep = usage_value(parse_endpoint(listen), "--listen");
  if (ep.kind == Endpoint::Kind::Stdio) throw UsageError("--listen -: standard input is served without --listen");
  if (ep.kind == Endpoint::Kind::Fd) {
    if (::fcntl(ep.fd, F_GETFD) < 0) throw UsageError("--listen fd:" + std::to_string(ep.fd) + ": no such descriptor");
    if (!is_listening_socket(ep.fd)) {
      if (!run.empty()) throw UsageError("--run needs a socket to listen on, but fd:" + std::to_string(ep.fd) + " is one connection");
      spec.connected_fd = ep.fd;
      return spec;
    }
  }
  spec.listen = ep;
  return spec;
}

Result<std::unique_ptr<Service>> Service::open(const ServiceSpec& spec) {
  std::unique_ptr<Service> s(new Service());
  s->spec_ = spec;
  if (spec.connected_fd) {
    clear_activation_env();
    s->connection_fds_.first.reset(*spec.connected_fd);
    return s;
  }
  if (spec.listen) {
    clear_activation_env();
    auto l = listen_endpoint(*spec.listen);
    if (!l) return l.status().with_context("listen on " + spec.listen->text);
    s->listeners_ = std::move(l).value();
    if (spec.listen->kind == Endpoint::Kind::Unix && spec.listen->path[0] != '@')
      s->socket_files_.push_back(spec.listen->path);
  } else {
    s->listeners_ = take_activated_sockets();
    if (s->listeners_.empty() && !spec.run.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/memsync.XXXXXX";
      if (!::mkdtemp(tmpl.data())) return Status::from_errno("create a private socket directory " + tmpl);
      s->private_dir_ = tmpl;
      Endpoint ep;
      ep.kind = Endpoint::Kind::Unix;
      ep.path = (s->private_dir_ / "nbd.sock").string();
      auto l = listen_endpoint(ep);
      if (!l) return l.status().with_context("listen on " + ep.to_string());
      s->listeners_ = std::move(l).value();
    }
  }
  if (s->listeners_.empty()) {
    if (!spec.run.empty()) return Status::invalid("--run needs a socket to listen on");
    s->connection_fds_ = {UniqueFd(::dup(STDIN_FILENO)), UniqueFd(::dup(STDOUT_FILENO))};
    if (!s->connection_fds_.first || !s->connection_fds_.second)
      return Status::from_errno("use standard input and output");
    return s;
  }
  auto where = local_endpoint(s->listeners_.front().get());
  if (where) s->address_ = *where;
  return s;
}

Service::~Service() {
  terminate_command();
  if (waiter_.joinable()) waiter_.join();
  listeners_.clear();
  for (auto& f : socket_files_) ::unlink(f.c_str());
  if (!private_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(private_dir_, ec);
  }
}

std::unique_ptr<Channel> Service::take_connection() {
  if (connection_fds_.second) return std::make_unique<Channel>(std::move(connection_fds_.first), std::move(connection_fds_.second));
  return std::make_unique<Channel>(std::move(connection_fds_.first));
}

Status Service::start_command(const std::map<std::string, std::string>& env, std::function<void()> on_exit) {
  if (spec_.run.empty()) return Status::ok();
  std::lock_guard lock(child_mu_);
  auto pid = spawn_shell(spec_.run, env);
  if (!pid) return pid.status();
  child_ = *pid;
  waiter_ = std::jthread([this, pid = *pid, on_exit = std::move(on_exit)] {
    // Wait without reaping first, so terminate_command() can never signal a
    // recycled pid: the child stays a zombie until child_ is cleared.
    siginfo_t info{};
    while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {}
    {
      std::lock_guard l(child_mu_);
      child_ = -1;
    }
    auto code = wait_exit_code(pid);
    child_code_ = code ? *code : kExitFailure;
    on_exit();
  });
  return Status::ok();
}

void Service::terminate_command() {
  std::lock_guard lock(child_mu_);
  if (child_ > 0) ::kill(child_, SIGTERM);
}

int Service::command_exit_code() {
  if (waiter_.joinable()) waiter_.join();
  return child_code_;
}

}  // namespace memsync::cli
