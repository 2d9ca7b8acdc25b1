// NBD URIs as the NBD project's doc/uri.md writes them.
#include <gtest/gtest.h>

#include "net/nbd_uri.hpp"

using namespace memsync;

TEST(NbdUri, Tcp) {
  auto u = parse_nbd_uri("nbd://example.com/disk");
  ASSERT_TRUE(u) << u.status().message();
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->endpoint.kind, Endpoint::Kind::Tcp);
  EXPECT_EQ(u->endpoint.host, "example.com");
  EXPECT_EQ(u->endpoint.port, 10809);
  EXPECT_EQ(u->export_name, "disk");
  u = parse_nbd_uri("nbds://alice@[::1]:10810/a%20b");
  ASSERT_TRUE(u) << u.status().message();
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->endpoint.host, "::1");
  EXPECT_EQ(u->endpoint.port, 10810);
  EXPECT_EQ(u->export_name, "a b");
  EXPECT_EQ(u->user, "alice");
  u = parse_nbd_uri("nbd://127.0.0.1:7000");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->export_name, "");
}

TEST(NbdUri, Unix) {
  auto u = parse_nbd_uri("nbd+unix:///?socket=/tmp/x.sock");
  ASSERT_TRUE(u) << u.status().message();
  EXPECT_EQ(u->endpoint.kind, Endpoint::Kind::Unix);
  EXPECT_EQ(u->endpoint.path, "/tmp/x.sock");
  EXPECT_EQ(u->export_name, "");
  u = parse_nbd_uri("nbds+unix:///exp?socket=/run/a%3Fb.sock&tls-certificates=/etc/pki");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->endpoint.path, "/run/a?b.sock");
  EXPECT_EQ(u->export_name, "exp");
  EXPECT_EQ(u->query.at("tls-certificates"), "/etc/pki");
  EXPECT_EQ(u->query.count("socket"), 0u);
}

TEST(NbdUri, Errors) {
  for (const char* bad : {"nbd:/x", "http://x/", "nbd:///", "nbd+unix:///x", "nbd+unix://host/?socket=/s",
                          "nbd://::1/x", "nbd://[::1/x", "nbd://h:99999/", "nbd://h/x%zz", "nbd://h/?socket=/s"}) {
    EXPECT_FALSE(parse_nbd_uri(bad)) << bad;
  }
  EXPECT_TRUE(is_nbd_uri("nbds+unix:///?socket=x"));
  EXPECT_FALSE(is_nbd_uri("unix:/x"));
}
