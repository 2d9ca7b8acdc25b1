// Child processes: start a shell command, wait for it, report its status.
//
// spawn_shell runs `/bin/sh -c COMMAND` with extra environment variables,
// the default signal mask and dispositions restored (SignalWatcher blocks
// signals in the parent), and the parent's standard descriptors.
// Thread safety: spawn from any thread; wait for a pid from one thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include "util/status.hpp"

namespace memsync {

Result<pid_t> spawn_shell(const std::string& command, const std::map<std::string, std::string>& env);

// A child started from an argument vector (no shell), with chosen
// descriptors: stdin_fd/stdout_fd replace 0 and 1 when >= 0, and
// pass_fds become 3, 4, ... in order. With socket_activation the child also
// gets LISTEN_FDS=<number of pass_fds> and LISTEN_PID=<its own pid>, the
// systemd convention nbd-serve and nbdkit understand. argv[0] is looked up
// in PATH (before forking: the child only calls async-signal-safe code).
struct SpawnSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to (or replacing in) ours
  int stdin_fd = -1;
  int stdout_fd = -1;
  std::vector<int> pass_fds;
  bool socket_activation = false;
  bool new_process_group = false;  // so a terminal's ^C reaches only us
};
Result<pid_t> spawn_process(const SpawnSpec& spec);

// Waits for pid; returns its exit code, or 128+N if signal N killed it
// (the shell convention).
Result<int> wait_exit_code(pid_t pid);
// Like wait_exit_code, but returns nullopt at once if pid is still running.
Result<std::optional<int>> poll_exit_code(pid_t pid);

}  // namespace memsync
