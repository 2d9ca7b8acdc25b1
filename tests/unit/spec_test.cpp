// The backend spec grammar of memsync(7).
#include <gtest/gtest.h>

#include "backend/open_store.hpp"
#include "backend/spec.hpp"

using namespace memsync;

TEST(BackendSpec, KnownSchemes) {
  auto s = parse_backend_spec("mem:1G");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->scheme, "mem");
  EXPECT_EQ(s->location, "1G");
  auto d = parse_backend_spec("dir:/var/x?size=1G&chunk=64K");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->scheme, "dir");
  EXPECT_EQ(d->location, "/var/x");
  EXPECT_EQ(d->params.at("size"), "1G");
  EXPECT_EQ(d->params.at("chunk"), "64K");
}

TEST(BackendSpec, AnythingElseIsAPath) {
  for (const char* p : {"disk.img", "/dev/sda", "backup:2024.img", "a?b=c", "./mem:1G", "x:y:z", "C:\\odd"}) {
    auto s = parse_backend_spec(p);
    ASSERT_TRUE(s) << p;
    EXPECT_EQ(s->scheme, "file") << p;
    EXPECT_EQ(s->location, p) << p;
    EXPECT_TRUE(s->params.empty()) << p;
  }
}

TEST(BackendSpec, FileSchemeTakesParamsAndEscapes) {
  auto s = parse_backend_spec("file:/tmp/a%3Fb?size=1M");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->location, "/tmp/a%3Fb");  // escapes apply to values only
  EXPECT_EQ(s->params.at("size"), "1M");
  auto e = parse_backend_spec("dir:/x?size=1G&note=a%26b");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->params.at("note"), "a&b");
}

TEST(BackendSpec, Errors) {
  EXPECT_FALSE(parse_backend_spec(""));
  EXPECT_FALSE(parse_backend_spec("dir:/x?size"));
  EXPECT_FALSE(parse_backend_spec("dir:/x?=1"));
  EXPECT_FALSE(parse_backend_spec("dir:/x?size=1&size=2"));
  EXPECT_FALSE(parse_backend_spec("dir:/x?size=%zz"));
  EXPECT_FALSE(parse_backend_spec("dir:/x?size=%4"));
}

TEST(OpenStore, MessagesNameTheProblem) {
  auto r = open_store("mem:");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("mem:SIZE"), std::string::npos);
  r = open_store("mem:1G?x=1");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("unknown parameter 'x'"), std::string::npos);
  r = open_store("tape:/dev/nst0");
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.status().is_unsupported());
  r = open_store("redis:unix:/tmp/r.sock");  // Redis keeps no size
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("?size=SIZE"), std::string::npos) << r.status().message();
  r = open_store("redis:unix:/tmp/r.sock?size=1M&chunk=3000");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("chunk"), std::string::npos) << r.status().message();
  r = open_store("redis:unix:/tmp/r.sock?size=1M&colour=red");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("unknown parameter 'colour'"), std::string::npos);
  r = open_store("remote:unix:/tmp/x.sock?tls-cert=a.pem");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("tls-cert and tls-key go together"), std::string::npos);
  r = open_store("remote:unix:/tmp/x.sock?compress=maybe");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("yes or no"), std::string::npos);
  r = open_store("remote:fd:3");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("remote:unix:PATH"), std::string::npos) << r.status().message();
  r = open_store("remote:unix:/definitely/not/here.sock");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ENOENT) << r.status().message();
  r = open_store("/definitely/not/here.img");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), ENOENT);
  r = open_store("dir:/tmp/memsync-unit-nosize");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("size"), std::string::npos);
}
