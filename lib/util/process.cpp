#include "util/process.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

extern char** environ;

namespace memsync {

namespace {

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& env, bool drop_activation) {
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (eq != std::string::npos && env.count(key)) continue;
    if (drop_activation && (key == "LISTEN_FDS" || key == "LISTEN_PID" || key == "LISTEN_FDNAMES")) continue;
    vars.push_back(std::move(kv));
  }
  for (auto& [k, v] : env) vars.push_back(k + "=" + v);
  return vars;
}

Result<std::string> find_in_path(const std::string& name) {
  if (name.empty()) return Status::invalid("empty command");
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0) return Status::from_errno("run " + name);
    return name;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    size_t end = dirs.find(':', start);
    std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return Status::error(ENOENT, "run " + name + ": command not found");
}

// Writes v in decimal into buf (async-signal-safe); returns the end.
char* put_decimal(char* buf, long v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0) *buf++ = tmp[--n];
  *buf = '\0';
  return buf;
}

}  // namespace

Result<pid_t> spawn_process(const SpawnSpec& spec) {
  if (spec.argv.empty()) return Status::invalid("no command to run");
  auto exe = find_in_path(spec.argv[0]);
  if (!exe) return exe.status();
  std::vector<std::string> vars = merged_environment(spec.env, spec.socket_activation);
  std::string fds_var = "LISTEN_FDS=" + std::to_string(spec.pass_fds.size());
  std::string pid_var = "LISTEN_PID=" + std::string(24, '\0');  // filled in by the child
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  if (spec.socket_activation) {
    envp.push_back(fds_var.data());
    envp.push_back(pid_var.data());
  }
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) return Status::from_errno("fork");
  if (pid == 0) {
    // The child: async-signal-safe calls only.
    if (spec.new_process_group) ::setpgid(0, 0);
    sigset_t empty;
    sigemptyset(&empty);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    // Move passed descriptors out of the way first, so that placing one at
    // 3 cannot overwrite another still to be placed.
    int moved[64];
    size_t n = std::min<size_t>(spec.pass_fds.size(), 64);
    for (size_t i = 0; i < n; ++i) moved[i] = ::fcntl(spec.pass_fds[i], F_DUPFD, 64 + static_cast<int>(n));
    if (spec.stdin_fd >= 0) ::dup2(spec.stdin_fd, 0);
    if (spec.stdout_fd >= 0) ::dup2(spec.stdout_fd, 1);
    for (size_t i = 0; i < n; ++i) {
      ::dup2(moved[i], 3 + static_cast<int>(i));  // dup2 clears close-on-exec
      ::close(moved[i]);
    }
    if (spec.socket_activation) put_decimal(pid_var.data() + 11, ::getpid());
    ::execve(exe->c_str(), argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

Result<pid_t> spawn_shell(const std::string& command, const std::map<std::string, std::string>& env) {
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", command};
  spec.env = env;
  auto pid = spawn_process(spec);
  if (!pid) return pid.status().with_context("run '" + command + "'");
  return pid;
}

Result<std::optional<int>> poll_exit_code(pid_t pid) {
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, WNOHANG)) < 0) {
    if (errno != EINTR) return Status::from_errno("wait for child " + std::to_string(pid));
  }
  if (r == 0) return std::optional<int>();
  if (WIFEXITED(status)) return std::optional<int>(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::optional<int>(128 + WTERMSIG(status));
  return std::optional<int>(1);
}

Result<int> wait_exit_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Status::from_errno("wait for child " + std::to_string(pid));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace memsync
