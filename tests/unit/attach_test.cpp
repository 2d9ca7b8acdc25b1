// The parts of nbd-attach that need no kernel: the checks against what the
// kernel can do, device names, and the handshake that prepares sockets for
// the kernel (plain and through the TLS relay) against our real server.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../helpers/socket_pair.hpp"
#include "../helpers/raw_nbd_client.hpp"
#include "backend/mem_store.hpp"
#include "kernel/attach.hpp"
#include "kernel/nbd_device.hpp"
#include "nbd/protocol.hpp"
#include "nbd/server.hpp"
#include "net/tls.hpp"

using namespace memsync;
using namespace memsync::kernel;

namespace {

nbd::ExportInfo export_of(uint64_t size, uint16_t flags = nbd::kFlagHasFlags) {
  nbd::ExportInfo i;
  i.size = size;
  i.transmission_flags = flags;
  return i;
}

TEST(PlanConnect, DefaultsFollowTheServer) {
  auto info = export_of(1 << 20);
  info.min_block = 1;
  auto c = plan_connect(info, 1, AttachOptions{});
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->block_size, 512u);  // the kernel's smallest
  EXPECT_EQ(c->size_bytes, 1u << 20);
  EXPECT_TRUE(c->server_flags & nbd::kFlagHasFlags);
  EXPECT_FALSE(c->server_flags & nbd::kFlagReadOnly);
  info.min_block = 4096;
  c = plan_connect(info, 1, AttachOptions{});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->block_size, 4096u);
}

TEST(PlanConnect, OptionsReachTheRequest) {
  AttachOptions o;
  o.index = 3;
  o.block_size = 1024;
  o.timeout_s = 30;
  o.dead_conn_timeout_s = 120;
  o.read_only = true;
  o.backend_identifier = "memsync:x";
  auto c = plan_connect(export_of(8192), 1, o);
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(*c->index, 3u);
  EXPECT_EQ(c->block_size, 1024u);
  EXPECT_EQ(*c->timeout_s, 30u);
  EXPECT_EQ(*c->dead_conn_timeout_s, 120u);
  EXPECT_TRUE(c->server_flags & nbd::kFlagReadOnly);
  EXPECT_EQ(c->backend_identifier, "memsync:x");
}

TEST(PlanConnect, RefusesWhatTheKernelCannotDo) {
  const uint32_t page = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
  // Several connections need CAN_MULTI_CONN.
  auto c = plan_connect(export_of(1 << 20), 2, AttachOptions{});
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("CAN_MULTI_CONN"), std::string::npos);
  EXPECT_TRUE(plan_connect(export_of(1 << 20, nbd::kFlagHasFlags | nbd::kFlagCanMultiConn), 4, AttachOptions{}));
  // A server minimum above the page size.
  auto big = export_of(1 << 20);
  big.min_block = page * 2;
  c = plan_connect(big, 1, AttachOptions{});
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("page size"), std::string::npos) << c.status().message();
  // A block size below the server's minimum, or not a power of two.
  auto min2k = export_of(1 << 20);
  min2k.min_block = 2048;
  AttachOptions o;
  o.block_size = 1024;
  c = plan_connect(min2k, 1, o);
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("below the server's minimum"), std::string::npos) << c.status().message();
  o.block_size = 1536;
  EXPECT_FALSE(plan_connect(export_of(1 << 20), 1, o));
  o.block_size = page * 2;
  EXPECT_FALSE(plan_connect(export_of(1 << 20), 1, o));
  // A maximum payload smaller than a page.
  auto tiny = export_of(1 << 20);
  tiny.max_payload = 1024;
  c = plan_connect(tiny, 1, AttachOptions{});
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("largest request"), std::string::npos);
  EXPECT_FALSE(plan_connect(export_of(1 << 20), 0, AttachOptions{}));
}

TEST(NbdDevice, Names) {
  EXPECT_EQ(device_path(7), "/dev/nbd7");
  EXPECT_EQ(*parse_device("/dev/nbd12"), 12u);
  EXPECT_EQ(*parse_device("nbd3"), 3u);
  EXPECT_EQ(*parse_device("0"), 0u);
  for (const char* bad : {"", "/dev/sda", "/dev/nbd", "nbd1p1", "/dev/nbd-1", "x"}) EXPECT_FALSE(parse_device(bad)) << bad;
}

using test::pair_of_sockets;

// After handshake_for_kernel the socket speaks plain transmission with
// simple replies, as the kernel expects: write then read back through it.
void expect_simple_transmission(int fd) {
  test::RawNbdClient c(fd);
  std::vector<std::byte> data(4096, std::byte{0x5a});
  ASSERT_TRUE(c.send_request(nbd::kCmdWrite, 8192, 4096, 1, 0, data));
  auto w = c.read_simple_reply();
  ASSERT_TRUE(w.ok);
  EXPECT_EQ(w.error, 0u);
  ASSERT_TRUE(c.send_request(nbd::kCmdRead, 8192, 4096, 2));
  auto r = c.read_simple_reply();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.cookie, 2u);
  EXPECT_EQ(c.recv(4096), data);
  (void)c.send_request(nbd::kCmdDisc, 0, 0, 3);
}

TEST(HandshakeForKernel, AdoptedConnectionGivesAPlainSocket) {
  nbd::ServerOptions o;
  o.export_config.name = "disk";
  o.export_config.max_payload = 1 << 20;
  nbd::NbdServer server(*MemStore::create(1 << 20), o);
  auto [ours, kernels] = pair_of_sockets();
  server.adopt(std::move(ours));
  auto c = handshake_for_kernel(std::move(kernels), "disk");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->info.size, 1u << 20);
  EXPECT_EQ(c->info.max_payload, 1u << 20);
  EXPECT_FALSE(c->tls_relay);
  int fd = c->socket.release();
  expect_simple_transmission(fd);  // RawNbdClient owns fd now
  server.join();                   // the connection ended by itself (DISC)
}

TEST(HandshakeForKernel, RefusedExportSaysWhy) {
  nbd::NbdServer server(*MemStore::create(1 << 20), nbd::ServerOptions{});
  auto [ours, kernels] = pair_of_sockets();
  server.adopt(std::move(ours));
  auto c = handshake_for_kernel(std::move(kernels), "nope");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ENOENT);
  EXPECT_NE(c.status().message().find("nope"), std::string::npos) << c.status().message();
}

TEST(HandshakeForKernel, SilentServerTimesOut) {
  auto [quiet, kernels] = pair_of_sockets();
  auto c = handshake_for_kernel(std::move(kernels), "", nullptr, std::chrono::milliseconds(200));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), ETIMEDOUT) << c.status().message();
}

struct PskFile {
  std::filesystem::path dir;
  std::string path;
  PskFile() {
    char tmpl[] = "/tmp/attach-test.XXXXXX";
    dir = ::mkdtemp(tmpl);
    path = (dir / "keys.psk").string();
    std::ofstream(path) << "alice:0123456789abcdef0123456789abcdef\n";
  }
  ~PskFile() { std::filesystem::remove_all(dir); }
};

// Server options for an export that requires TLS with the keys in psk.
nbd::ServerOptions tls_required(const PskFile& psk) {
  TlsServerOptions so;
  so.psk_file = psk.path;
  auto ctx = TlsServerContext::create(so);
  EXPECT_TRUE(ctx) << ctx.status().message();
  nbd::ServerOptions o;
  o.export_config.tls = nbd::TlsMode::Require;
  o.export_config.tls_context = *ctx;
  return o;
}

TEST(HandshakeForKernel, TlsRelayCarriesTransmission) {
  PskFile psk;
  nbd::NbdServer server(*MemStore::create(1 << 20), tls_required(psk));

  TlsClientOptions co;
  co.psk_file = psk.path;
  co.psk_identity = "alice";
  auto client_ctx = TlsClientContext::create(co);
  ASSERT_TRUE(client_ctx) << client_ctx.status().message();

  auto [ours, kernels] = pair_of_sockets();
  server.adopt(std::move(ours));
  auto c = handshake_for_kernel(std::move(kernels), "", client_ctx->get());
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_TRUE(c->tls_relay);
  int fd = c->socket.release();
  expect_simple_transmission(fd);
  server.join();
}

TEST(HandshakeForKernel, TlsWithTheWrongKeyIsRefused) {
  PskFile psk;
  nbd::NbdServer server(*MemStore::create(1 << 20), tls_required(psk));
  std::string other = (psk.dir / "other.psk").string();
  std::ofstream(other) << "alice:ffffffffffffffffffffffffffffffff\n";
  TlsClientOptions co;
  co.psk_file = other;
  auto client_ctx = TlsClientContext::create(co);
  ASSERT_TRUE(client_ctx);
  auto [ours, kernels] = pair_of_sockets();
  server.adopt(std::move(ours));
  auto c = handshake_for_kernel(std::move(kernels), "", client_ctx->get());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), EACCES) << c.status().message();
  server.stop();
}

TEST(HandshakeForKernel, PlainClientAgainstTlsRequiredServerIsTold) {
  PskFile psk;
  nbd::NbdServer server(*MemStore::create(1 << 20), tls_required(psk));
  auto [ours, kernels] = pair_of_sockets();
  server.adopt(std::move(ours));
  auto c = handshake_for_kernel(std::move(kernels), "");
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("requires TLS"), std::string::npos) << c.status().message();
  server.stop();
}

}  // namespace
