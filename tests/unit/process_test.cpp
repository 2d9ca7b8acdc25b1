// Child processes (argv spawning with descriptor placement and socket
// activation), and the pid file of tools that stay running.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "util/process.hpp"
#include "util/readiness.hpp"

using namespace memsync;

namespace {

std::string read_all(int fd) {
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

TEST(SpawnProcess, StdoutAndSocketActivation) {
  int out[2], extra[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, extra), 0);
  SpawnSpec s;
  // The child proves fd 3 is the passed socket by writing through it.
  s.argv = {"sh", "-c", "echo \"$LISTEN_FDS $LISTEN_PID $$ $GREETING\"; echo via3 >&3"};
  s.env = {{"GREETING", "hi"}};
  s.stdout_fd = out[1];
  s.pass_fds = {extra[1]};
  s.socket_activation = true;
  auto pid = spawn_process(s);
  ASSERT_TRUE(pid) << pid.status().message();
  ::close(out[1]);
  ::close(extra[1]);
  std::string text = read_all(out[0]);
  ::close(out[0]);
  EXPECT_EQ(text, "1 " + std::to_string(*pid) + " " + std::to_string(*pid) + " hi\n");
  EXPECT_EQ(read_all(extra[0]), "via3\n");
  ::close(extra[0]);
  EXPECT_EQ(*wait_exit_code(*pid), 0);
}

TEST(SpawnProcess, ExitCodesAndMissingCommands) {
  SpawnSpec s;
  s.argv = {"sh", "-c", "exit 7"};
  auto pid = spawn_process(s);
  ASSERT_TRUE(pid);
  EXPECT_EQ(*wait_exit_code(*pid), 7);
  s.argv = {"sh", "-c", "kill -TERM $$"};
  pid = spawn_process(s);
  ASSERT_TRUE(pid);
  EXPECT_EQ(*wait_exit_code(*pid), 128 + SIGTERM);
  s.argv = {"no-such-command-memsync"};
  auto missing = spawn_process(s);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("command not found"), std::string::npos);
  EXPECT_FALSE(spawn_process(SpawnSpec{}));
}

TEST(SpawnProcess, PollSeesRunningThenExited) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  SpawnSpec s;
  s.argv = {"sh", "-c", "read x; exit 3"};
  s.stdin_fd = p[0];
  auto pid = spawn_process(s);
  ASSERT_TRUE(pid);
  ::close(p[0]);
  auto running = poll_exit_code(*pid);
  ASSERT_TRUE(running);
  EXPECT_FALSE(*running);
  ASSERT_EQ(::write(p[1], "go\n", 3), 3);
  ::close(p[1]);
  EXPECT_EQ(*wait_exit_code(*pid), 3);
}

TEST(SpawnShell, EnvironmentReachesTheCommand) {
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  // spawn_shell keeps our stdout: redirect ours around the call.
  int saved = ::dup(STDOUT_FILENO);
  ::dup2(out[1], STDOUT_FILENO);
  auto pid = spawn_shell("echo \"$uri\"", {{"uri", "nbd://x/"}});
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(out[1]);
  ASSERT_TRUE(pid);
  EXPECT_EQ(read_all(out[0]), "nbd://x/\n");
  ::close(out[0]);
  EXPECT_EQ(*wait_exit_code(*pid), 0);
}

TEST(PidFile, WrittenThenRemoved) {
  char tmpl[] = "/tmp/pidfile-test.XXXXXX";
  std::filesystem::path dir = ::mkdtemp(tmpl);
  std::string path = (dir / "x.pid").string();
  {
    auto f = PidFile::write(path);
    ASSERT_TRUE(f) << f.status().message();
    std::ifstream in(path);
    pid_t pid = 0;
    in >> pid;
    EXPECT_EQ(pid, ::getpid());
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(PidFile::write((dir / "missing" / "x.pid").string()));
  EXPECT_TRUE(PidFile::write(""));  // no file asked for
  std::filesystem::remove_all(dir);
}

}  // namespace
