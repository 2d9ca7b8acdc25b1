// nbd-probe ENDPOINT SCENARIO: sends one kind of bad (or odd) input to an
// NBD server and prints what the server answered, one word per line, so
// bats tests can check the server does what the NBD spec prescribes.
// A test helper, not a tool: the bytes it sends are wrong on purpose.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "helpers/raw_nbd_client.hpp"
#include "net/endpoint.hpp"

using namespace memsync;
using namespace memsync::nbd;
using memsync::test::RawNbdClient;

namespace {

const char* rep_name(uint32_t t) {
  switch (t) {
    case kRepAck: return "ACK";
    case kRepServer: return "SERVER";
    case kRepInfo: return "INFO";
    case kRepErrUnsup: return "ERR_UNSUP";
    case kRepErrPolicy: return "ERR_POLICY";
    case kRepErrInvalid: return "ERR_INVALID";
    case kRepErrTlsReqd: return "ERR_TLS_REQD";
    case kRepErrUnknown: return "ERR_UNKNOWN";
    case kRepErrTooBig: return "ERR_TOO_BIG";
    default: return "OTHER";
  }
}

const char* err_name(uint32_t e) {
  switch (e) {
    case 0: return "OK";
    case kEperm: return "EPERM";
    case kEio: return "EIO";
    case kEinval: return "EINVAL";
    case kEnospc: return "ENOSPC";
    case kEoverflow: return "EOVERFLOW";
    case kEnotsup: return "ENOTSUP";
    case kEshutdown: return "ESHUTDOWN";
    default: return "OTHER";
  }
}

void say(const std::string& s) { std::printf("%s\n", s.c_str()); std::fflush(stdout); }

// After an error, a READ must still work: the stream stayed in sync.
void check_in_sync(RawNbdClient& c) {
  c.send_request(kCmdRead, 0, 512, 999);
  auto r = c.read_simple_reply();
  say(r.ok && r.error == 0 && r.cookie == 999 && c.recv(512).size() == 512 ? "in-sync" : "out-of-sync");
}

void check_opt_in_sync(RawNbdClient& c) {
  c.send_option(kOptList, {});
  auto rs = c.read_until_final();
  say(!rs.empty() && rs.back().type == kRepAck ? "in-sync" : "out-of-sync");
}

int run(RawNbdClient& c, const std::string& scenario, uint64_t& size) {
  std::vector<std::byte> payload;
  auto request_error = [&](uint16_t type, uint64_t off, uint32_t len, uint16_t flags, size_t send_len) {
    payload.assign(send_len, std::byte{0x42});
    c.send_request(type, off, len, 1, flags, payload);
    auto r = c.read_simple_reply();
    say(r.ok ? err_name(r.error) : "closed");
    if (r.ok) check_in_sync(c);
  };
  if (scenario == "bad-client-flags") {
    if (c.read_greeting() < 0) return 1;
    c.send_client_flags(1u << 9);
    say(c.closed() ? "closed" : "open");
    return 0;
  }
  if (scenario == "idle") {  // say nothing after the greeting
    if (c.read_greeting() < 0) return 1;
    say(c.closed(20000) ? "closed" : "open");
    return 0;
  }
  if (scenario == "bad-option-magic") {
    if (c.read_greeting() < 0) return 1;
    c.send_client_flags(kClientFixedNewstyle);
    ByteWriter w;
    w.u64(0x1122334455667788ULL).u32(kOptList).u32(0);
    c.send(w.data());
    say(c.closed() ? "closed" : "open");
    return 0;
  }
  if (scenario == "unknown-option" || scenario == "oversize-option" || scenario == "malformed-go" ||
      scenario == "unknown-export" || scenario == "starttls" || scenario == "abort") {
    if (c.read_greeting() < 0) return 1;
    c.send_client_flags(kClientFixedNewstyle);
    ByteWriter w;
    uint32_t opt = kOptAbort;
    if (scenario == "unknown-option") { opt = 0x1234; w.str("junk"); }
    if (scenario == "oversize-option") { opt = kOptGo; w.zeros(1 << 20); }
    if (scenario == "malformed-go") { opt = kOptGo; w.u32(1000).str("x"); }
    if (scenario == "unknown-export") { opt = kOptGo; w.u32(7).str("missing").u16(0); }
    if (scenario == "starttls") opt = kOptStartTls;
    c.send_option(opt, w.data());
    auto r = c.read_opt_reply();
    say(r.ok ? rep_name(r.type) : "closed");
    if (scenario == "abort") say(c.closed() ? "closed" : "open");
    else if (r.ok) check_opt_in_sync(c);
    return 0;
  }
  if (!c.handshake(false, false, &size)) {
    say("handshake-failed");
    return 1;
  }
  if (scenario == "bad-request-magic") {
    ByteWriter w;
    w.u32(0xdeadbeef).zeros(24);
    c.send(w.data());
    say(c.closed() ? "closed" : "open");
  } else if (scenario == "unknown-command") {
    request_error(42, 0, 512, 0, 0);
  } else if (scenario == "unknown-flag") {
    request_error(kCmdRead, 0, 512, 1 << 12, 0);
  } else if (scenario == "read-beyond-end") {
    request_error(kCmdRead, size - 100, 512, 0, 0);
  } else if (scenario == "write-beyond-end") {
    request_error(kCmdWrite, size - 100, 512, 0, 512);
  } else if (scenario == "offset-overflow") {
    request_error(kCmdRead, ~0ULL - 10, 512, 0, 0);
  } else if (scenario == "misaligned-read") {
    request_error(kCmdRead, 1, 512, 0, 0);
  } else if (scenario == "read-over-max") {
    request_error(kCmdRead, 0, (32 << 20) + 1, 0, 0);
  } else if (scenario == "write-over-max") {
    request_error(kCmdWrite, 0, (32 << 20) + 1, 0, (32 << 20) + 1);
  } else if (scenario == "write") {
    request_error(kCmdWrite, 0, 512, 0, 512);
  } else if (scenario == "trim") {
    request_error(kCmdTrim, 0, 4096, 0, 0);
  } else if (scenario == "block-status-without-context") {
    request_error(kCmdBlockStatus, 0, 4096, 0, 0);
  } else if (scenario == "disconnect-mid-write") {
    payload.assign(1000, std::byte{1});
    c.send_request(kCmdWrite, 0, 65536, 1, 0, payload);
    say("sent-partial");
  } else if (scenario == "disconnect-mid-header") {
    ByteWriter w;
    w.u32(kRequestMagic).u16(0);
    c.send(w.data());
    say("sent-partial");
  } else {
    std::fprintf(stderr, "nbd-probe: unknown scenario %s\n", scenario.c_str());
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: nbd-probe ENDPOINT SCENARIO\n");
    return 2;
  }
  auto ep = parse_endpoint(argv[1]);
  if (!ep) { std::fprintf(stderr, "nbd-probe: %s\n", ep.status().message().c_str()); return 2; }
  auto fd = connect_endpoint(*ep);
  if (!fd) { std::fprintf(stderr, "nbd-probe: %s\n", fd.status().message().c_str()); return 1; }
  RawNbdClient c(fd->release());
  uint64_t size = 0;
  return run(c, argv[2], size);
}
