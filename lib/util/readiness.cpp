#include "util/readiness.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace memsync {

Result<Readiness> Readiness::background() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return Status::from_errno("pipe");
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return Status::from_errno("fork");
  if (pid > 0) {
    // The parent: relay the child's line or its exit status, then leave.
    ::close(p[1]);
    std::string line;
    char buf[512];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) != 0) {
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      line.append(buf, static_cast<size_t>(n));
    }
    if (!line.empty()) {
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fflush(stdout);
      std::_Exit(0);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::_Exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
  }
  ::close(p[0]);
  ::setsid();
  // Our stdout may be a command substitution waiting for end-of-file: the
  // line goes through the pipe, and nothing we start may hold stdout open.
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, STDOUT_FILENO);
    ::close(null);
  }
  Readiness r;
  r.pipe_.reset(p[1]);
  return r;
}

void Readiness::ready(const std::string& line) {
  std::string text = line + "\n";
  if (!pipe_.valid()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return;
  }
  (void)!::write(pipe_.get(), text.data(), text.size());
  pipe_.reset();
}

Result<PidFile> PidFile::write(const std::string& path) {
  PidFile f;
  if (path.empty()) return f;
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << ::getpid() << '\n';
    out.flush();
    if (!out) return Status::from_errno("write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) return Status::from_errno("write " + path);
  f.path_ = path;
  return f;
}

PidFile& PidFile::operator=(PidFile&& o) noexcept {
  if (this != &o) {
    if (!path_.empty()) ::unlink(path_.c_str());
    path_ = std::move(o.path_);
    o.path_.clear();
  }
  return *this;
}

PidFile::~PidFile() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace memsync
