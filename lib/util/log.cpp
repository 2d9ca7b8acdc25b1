#include "util/log.hpp"

#include <unistd.h>

namespace memsync::log {
namespace {
// Set once in main before any thread starts; read-only afterwards.
std::string g_program = "memsync";
int g_verbosity = 0;

void emit(const char* level, const std::string& msg) {
  // One write(2) per line so lines from different threads do not interleave.
  std::string line = g_program + ": " + level + msg + "\n";
  ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
  (void)r;
}
}  // namespace

void set_program(std::string name) { g_program = std::move(name); }
const std::string& program() { return g_program; }
void set_verbosity(int level) { g_verbosity = level; }
int verbosity() { return g_verbosity; }

void error(const std::string& msg) { emit("", msg); }
void warn(const std::string& msg) { emit("warning: ", msg); }
void info(const std::string& msg) { if (g_verbosity >= 1) emit("", msg); }
void debug(const std::string& msg) { if (g_verbosity >= 2) emit("debug: ", msg); }

}  // namespace memsync::log
