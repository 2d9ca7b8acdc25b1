// A deliberately low-level NBD client for tests: it sends exactly the bytes
// a test asks for (including malformed ones) and decodes what comes back.
// Not a library piece: real clients are nbdinfo, qemu and the kernel.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "nbd/protocol.hpp"
#include "util/endian.hpp"
#include "util/fd.hpp"

namespace memsync::test {

class RawNbdClient {
 public:
  explicit RawNbdClient(int fd) : fd_(fd) {}

  bool send(std::span<const std::byte> b) {
    size_t done = 0;
    while (done < b.size()) {
      ssize_t n = ::send(fd_.get(), b.data() + done, b.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads exactly n bytes; empty vector on EOF/error/timeout (5 s).
  std::vector<std::byte> recv(size_t n, int timeout_ms = 5000) {
    std::vector<std::byte> out(n);
    size_t got = 0;
    while (got < n) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return {};
      ssize_t r = ::recv(fd_.get(), out.data() + got, n - got, 0);
      if (r <= 0) return {};
      got += static_cast<size_t>(r);
    }
    return out;
  }
  // True if the server closed the connection (EOF within the timeout).
  bool closed(int timeout_ms = 5000) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    std::byte b;
    return ::recv(fd_.get(), &b, 1, 0) <= 0;
  }

  // Greeting; returns the handshake flags or -1.
  int read_greeting() {
    auto g = recv(18);
    if (g.size() != 18 || load_be64(g.data()) != nbd::kNbdMagic || load_be64(g.data() + 8) != nbd::kIHaveOpt) return -1;
    return load_be16(g.data() + 16);
  }
  bool send_client_flags(uint32_t flags) {
    ByteWriter w;
    w.u32(flags);
    return send(w.data());
  }
  bool send_option(uint32_t opt, std::span<const std::byte> data) {
    ByteWriter w;
    w.u64(nbd::kIHaveOpt).u32(opt).u32(static_cast<uint32_t>(data.size())).bytes(data);
    return send(w.data());
  }
  struct OptReply {
    uint32_t option = 0, type = 0;
    std::vector<std::byte> data;
    bool ok = false;
  };
  OptReply read_opt_reply() {
    OptReply r;
    auto h = recv(20);
    if (h.size() != 20 || load_be64(h.data()) != nbd::kOptReplyMagic) return r;
    r.option = load_be32(h.data() + 8);
    r.type = load_be32(h.data() + 12);
    uint32_t len = load_be32(h.data() + 16);
    if (len > (1 << 20)) return r;
    r.data = len ? recv(len) : std::vector<std::byte>();
    r.ok = r.data.size() == len;
    return r;
  }
  // Reads option replies up to and including the final one (ACK or error).
  std::vector<OptReply> read_until_final() {
    std::vector<OptReply> all;
    for (;;) {
      auto r = read_opt_reply();
      if (!r.ok) return all;
      all.push_back(r);
      if (r.type == nbd::kRepAck || (r.type & nbd::kRepErrBit)) return all;
    }
  }
  // Full fixed-newstyle handshake with GO for the default export, optionally
  // with structured replies and base:allocation. Returns the export size.
  bool handshake(bool structured = false, bool base_allocation = false, uint64_t* size = nullptr,
                 uint16_t* flags = nullptr) {
    if (read_greeting() < 0 || !send_client_flags(nbd::kClientFixedNewstyle | nbd::kClientNoZeroes)) return false;
    if (structured) {
      send_option(nbd::kOptStructuredReply, {});
      if (read_opt_reply().type != nbd::kRepAck) return false;
    }
    if (base_allocation) {
      ByteWriter w;
      w.u32(0).u32(1).u32(15).str("base:allocation");
      send_option(nbd::kOptSetMetaContext, w.data());
      auto rs = read_until_final();
      if (rs.empty() || rs.back().type != nbd::kRepAck) return false;
    }
    ByteWriter go;
    go.u32(0).u16(0);
    send_option(nbd::kOptGo, go.data());
    auto rs = read_until_final();
    if (rs.empty() || rs.back().type != nbd::kRepAck) return false;
    for (auto& r : rs) {
      if (r.type == nbd::kRepInfo && r.data.size() >= 12 && load_be16(r.data.data()) == nbd::kInfoExport) {
        if (size) *size = load_be64(r.data.data() + 2);
        if (flags) *flags = load_be16(r.data.data() + 10);
      }
    }
    return true;
  }

  bool send_request(uint16_t type, uint64_t offset, uint32_t length, uint64_t cookie, uint16_t flags = 0,
                    std::span<const std::byte> payload = {}) {
    ByteWriter w;
    w.u32(nbd::kRequestMagic).u16(flags).u16(type).u64(cookie).u64(offset).u32(length).bytes(payload);
    return send(w.data());
  }
  struct SimpleReply {
    bool ok = false;
    uint32_t error = 0;
    uint64_t cookie = 0;
  };
  SimpleReply read_simple_reply() {
    SimpleReply r;
    auto h = recv(16);
    if (h.size() != 16 || load_be32(h.data()) != nbd::kSimpleReplyMagic) return r;
    r.ok = true;
    r.error = load_be32(h.data() + 4);
    r.cookie = load_be64(h.data() + 8);
    return r;
  }
  struct Chunk {
    bool ok = false;
    uint16_t flags = 0, type = 0;
    uint64_t cookie = 0;
    std::vector<std::byte> payload;
  };
  // Reads one reply of either kind: a simple reply comes back as a chunk
  // with type 0xffff and the error in payload (4 bytes).
  Chunk read_any_reply() {
    Chunk c;
    auto m = recv(4);
    if (m.size() != 4) return c;
    uint32_t magic = load_be32(m.data());
    if (magic == nbd::kSimpleReplyMagic) {
      auto rest = recv(12);
      if (rest.size() != 12) return c;
      c.ok = true;
      c.type = 0xffff;
      c.flags = nbd::kReplyFlagDone;
      c.payload.assign(rest.begin(), rest.begin() + 4);
      c.cookie = load_be64(rest.data() + 4);
      return c;
    }
    if (magic != nbd::kStructuredReplyMagic) return c;
    auto rest = recv(16);
    if (rest.size() != 16) return c;
    c.flags = load_be16(rest.data());
    c.type = load_be16(rest.data() + 2);
    c.cookie = load_be64(rest.data() + 4);
    uint32_t len = load_be32(rest.data() + 12);
    c.payload = len ? recv(len) : std::vector<std::byte>();
    c.ok = c.payload.size() == len;
    return c;
  }

  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace memsync::test
