// Readiness: how a tool that keeps running tells its caller that it is
// ready, so that `dev=$(nbd-attach ...)` works whether or not the tool stays.
//
// foreground(): ready(line) prints the line on stdout.
// background(): forks before anything else runs (REQUIRES: no threads yet).
//   The parent waits: when the child reports ready(line) it prints the line
//   and exits 0; when the child exits without reporting, the parent exits
//   with the child's status (the child has printed its error on stderr).
//   The child starts a new session (a terminal's ^C or hang-up no longer
//   reaches it) and points its stdout at /dev/null at once, so that neither
//   it nor anything it starts holds open a command substitution that waits
//   for end-of-file.
//
// Thread safety: main thread only.
#pragma once

#include <string>

#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync {

class Readiness {
 public:
  static Readiness foreground() { return Readiness(); }
  static Result<Readiness> background();

  void ready(const std::string& line);

 private:
  UniqueFd pipe_;  // to the waiting parent
};

// Writes our pid to path (replacing it); the returned object removes the
// file when destroyed. An empty path does nothing.
class PidFile {
 public:
  PidFile() = default;
  static Result<PidFile> write(const std::string& path);
  PidFile(PidFile&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  PidFile& operator=(PidFile&& o) noexcept;
  ~PidFile();

 private:
  std::string path_;
};

}  // namespace memsync
