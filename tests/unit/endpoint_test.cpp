// The endpoint grammar of memsync(7), and listening/connecting for real.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "net/endpoint.hpp"

using namespace memsync;

TEST(Endpoint, Parse) {
  auto e = parse_endpoint("-");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, Endpoint::Kind::Stdio);
  e = parse_endpoint("fd:7");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, Endpoint::Kind::Fd);
  EXPECT_EQ(e->fd, 7);
  e = parse_endpoint("unix:/run/a:b?c.sock");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path, "/run/a:b?c.sock");
  e = parse_endpoint("tcp:[::1]:10809");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 10809);
  EXPECT_EQ(e->to_string(), "tcp:[::1]:10809");
  e = parse_endpoint("tcp::7000");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "");
  e = parse_endpoint("tcp:example.org:0");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "example.org");
}

TEST(Endpoint, Errors) {
  for (const char* bad : {"", "fd:", "fd:x", "unix:", "tcp:", "tcp:host", "tcp:host:", "tcp:host:65536",
                          "tcp:::1:80", "tcp:[::1]80", "tcp:[::1", "http://x", "host:80",
                          "tcp:[[msms0]:100", "tcp:[localhost]:80", "tcp:a]b:80"}) {
    auto e = parse_endpoint(bad);
    EXPECT_FALSE(e) << bad;
  }
}

TEST(Endpoint, EmptyHostListensOnLoopbackOnly) {
  auto e = parse_endpoint("tcp::0");
  auto l = listen_endpoint(*e);
  ASSERT_TRUE(l) << l.status().message();
  auto where = local_endpoint(l->front().get());
  ASSERT_TRUE(where);
  EXPECT_EQ(where->host, "127.0.0.1");
  EXPECT_NE(where->port, 0);
}

TEST(Endpoint, Ipv6Loopback) {
  auto l = listen_endpoint(*parse_endpoint("tcp:[::1]:0"));
  if (!l && l.status().code() == EADDRNOTAVAIL) GTEST_SKIP() << "no IPv6 on this host";
  ASSERT_TRUE(l) << l.status().message();
  auto where = local_endpoint(l->front().get());
  ASSERT_TRUE(where);
  EXPECT_EQ(where->host, "::1");
  auto c = connect_endpoint(*where);
  EXPECT_TRUE(c) << c.status().message();
}

TEST(Endpoint, UnixReplacesStaleSocketButNotLiveOne) {
  auto dir = std::filesystem::temp_directory_path() / ("memsync-ep-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Endpoint ep = *parse_endpoint("unix:" + (dir / "s.sock").string());
  {
    auto l = listen_endpoint(ep);
    ASSERT_TRUE(l);
    auto second = listen_endpoint(ep);  // a live server is there
    ASSERT_FALSE(second);
    EXPECT_EQ(second.status().code(), EADDRINUSE);
    auto c = connect_endpoint(ep);
    EXPECT_TRUE(c);
  }
  // The listener is gone but its file remains: it may be replaced.
  auto again = listen_endpoint(ep);
  EXPECT_TRUE(again) << again.status().message();
  std::filesystem::remove_all(dir);
}

TEST(Endpoint, FdListeningOrConnected) {
  auto l = listen_endpoint(*parse_endpoint("tcp::0"));
  ASSERT_TRUE(l);
  int lfd = l->front().get();
  EXPECT_TRUE(is_listening_socket(lfd));
  Endpoint fdep = *parse_endpoint("fd:" + std::to_string(lfd));
  EXPECT_FALSE(connect_endpoint(fdep));  // a listening socket is not a connection
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Endpoint conn = *parse_endpoint("fd:" + std::to_string(sv[0]));
  EXPECT_FALSE(listen_endpoint(conn));  // a connection is not a listener
  auto c = connect_endpoint(conn);
  EXPECT_TRUE(c);
  ::close(sv[1]);
}

TEST(Endpoint, SocketActivation) {
  // Not for us: a different LISTEN_PID is ignored and the variables removed.
  ::setenv("LISTEN_PID", "1", 1);
  ::setenv("LISTEN_FDS", "1", 1);
  EXPECT_TRUE(take_activated_sockets().empty());
  EXPECT_EQ(std::getenv("LISTEN_FDS"), nullptr);
}
