// A connected pair of unix stream sockets, for tests that put a server and
// a client in one process.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <utility>

#include "util/fd.hpp"

namespace memsync::test {

inline std::pair<UniqueFd, UniqueFd> pair_of_sockets() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

}  // namespace memsync::test
