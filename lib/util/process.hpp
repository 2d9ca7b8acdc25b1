// Child processes: start a shell command, wait for it, report its status.
//
// spawn_shell runs `/bin/sh -c COMMAND` with extra environment variables,
// the default signal mask and dispositions restored (SignalWatcher blocks
// signals in the parent), and the parent's standard descriptors.
// Thread safety: spawn from any thread; wait for a pid from one thread.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "util/status.hpp"

namespace memsync {

Result<pid_t> spawn_shell(const std::string& command, const std::map<std::string, std::string>& env);

// Waits for pid; returns its exit code, or 128+N if signal N killed it
// (the shell convention).
Result<int> wait_exit_code(pid_t pid);

}  // namespace memsync
