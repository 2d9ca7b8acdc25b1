// The client handshake against our own server (both ends real), and against
// a scripted old server for the EXPORT_NAME fallback no current server needs.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "../helpers/raw_nbd_client.hpp"
#include "../helpers/socket_pair.hpp"
#include "backend/mem_store.hpp"
#include "nbd/client_handshake.hpp"
#include "nbd/protocol.hpp"
#include "nbd/server.hpp"

using namespace memsync;
using namespace memsync::nbd;

namespace {

using test::pair_of_sockets;

// `server` serves one connection on its end of a socketpair, on a thread;
// returns the client's channel and the thread (joined on destruction).
std::pair<std::unique_ptr<Channel>, std::jthread> connect_to(NbdServer& server) {
  auto [a, b] = pair_of_sockets();
  std::jthread t([&server, fd = std::move(b)]() mutable {
    Channel ch(std::move(fd));
    (void)server.serve(ch);
  });
  return {std::make_unique<Channel>(std::move(a)), std::move(t)};
}

TEST(ClientHandshake, GoWithBlockSizesAgainstNbdServe) {
  ServerOptions o;
  o.export_config.name = "disk";
  o.export_config.min_block = 512;
  o.export_config.max_payload = 1 << 20;
  NbdServer server(*MemStore::create(8 << 20), o);
  auto [client, t] = connect_to(server);
  auto info = client_handshake(*client, "disk");
  ASSERT_TRUE(info) << info.status().message();
  EXPECT_EQ(info->size, 8u << 20);
  EXPECT_TRUE(info->block_size_known);
  EXPECT_EQ(info->min_block, 512u);
  EXPECT_EQ(info->max_payload, 1u << 20);
  EXPECT_FALSE(info->used_export_name);
  EXPECT_TRUE(info->transmission_flags & kFlagHasFlags);
  server.stop();
}

TEST(ClientHandshake, UnknownExportCarriesTheServersMessage) {
  NbdServer server(*MemStore::create(1 << 20), ServerOptions{});
  auto [client, t] = connect_to(server);
  auto info = client_handshake(*client, "nope");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.status().code(), ENOENT);
  EXPECT_NE(info.status().message().find("no export named 'nope'"), std::string::npos) << info.status().message();
  client->stop();
  server.stop();
}

TEST(ClientHandshake, FallsBackToExportNameOnOldServers) {
  auto [a, b] = pair_of_sockets();
  std::jthread old_server([fd = b.release()] {
    test::RawNbdClient peer(fd);  // used here as a raw byte pipe
    ByteWriter greet;
    greet.u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle);
    peer.send(greet.data());
    peer.recv(4);                            // client flags
    auto h = peer.recv(16);                  // GO header
    peer.recv(load_be32(h.data() + 12));     // GO data
    ByteWriter unsup;
    unsup.u64(kOptReplyMagic).u32(kOptGo).u32(kRepErrUnsup).u32(0);
    peer.send(unsup.data());
    h = peer.recv(16);                       // EXPORT_NAME
    peer.recv(load_be32(h.data() + 12));
    ByteWriter reply;
    reply.u64(12345).u16(kFlagHasFlags | kFlagSendFlush).zeros(124);
    peer.send(reply.data());
  });
  Channel client(std::move(a));
  auto info = client_handshake(client, "");
  ASSERT_TRUE(info) << info.status().message();
  EXPECT_TRUE(info->used_export_name);
  EXPECT_EQ(info->size, 12345u);
  EXPECT_FALSE(info->block_size_known);
}

TEST(ClientHandshake, RejectsWhatIsNotNbd) {
  auto [a, b] = pair_of_sockets();
  std::string junk = "HTTP/1.1 400 Bad Request\r\n\r\n";
  ASSERT_EQ(::write(b.get(), junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  Channel client(std::move(a));
  auto info = client_handshake(client, "");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.status().code(), EPROTO);
}

}  // namespace
