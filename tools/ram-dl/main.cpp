// ram-dl: borrow memory from a ram-ul over the network and use it as swap.
// The man page (man/ram-dl.1) is the contract; this file only wires library
// pieces: options -> RemoteStore -> StoreAttachment -> swap header, swapon.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>

#include "cli/cli.hpp"
#include "cli/tls_options.hpp"
#include "kernel/nbd_device.hpp"
#include "kernel/store_attachment.hpp"
#include "kernel/swap_device.hpp"
#include "net/tls.hpp"
#include "util/log.hpp"
#include "util/readiness.hpp"
#include "util/signals.hpp"
#include "util/stop_hook.hpp"
#include "util/swap_path.hpp"
#include "util/units.hpp"
#include "wire/remote_store.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: ram-dl [OPTIONS] [ENDPOINT]

Borrow memory from a ram-ul at ENDPOINT, unix:PATH or tcp:HOST:PORT (default
tcp:127.0.0.1:1337), and use it as swap: attach it as /dev/nbdN with the NBD
server inside this process, write a swap header, swapon, print the device,
and stay until SIGINT or SIGTERM, which swap off and detach.
Needs root and the nbd module (modprobe nbd).

Options:
  -d, --device DEVICE       use /dev/nbdN (default: the kernel picks a free one)
  -p, --priority N          swap priority, -1 to 32767 (default -1: the kernel
                            puts it below every other swap area)
      --no-swap             only attach the remote memory and print the device
  -t, --timeout DURATION    fail a request the remote has not answered in time
                            (default: none, wait; a failed swap request is fatal)
      --max-inflight N      requests in flight to ram-ul, 1 to 1024 (default 64)
      --no-compress         do not ask for LZ4 compression
  -f, --foreground          do not fork: print the device and stay in the foreground
      --pidfile FILE        write the pid of the process that stays
      --tls-ca FILE         TLS: CA for the server's certificate (default: the system's)
      --tls-cert FILE       TLS: client certificate, for servers that ask
      --tls-key FILE        TLS: key of the client certificate
      --tls-psk FILE        TLS: pre-shared keys (identity:hexkey lines)
      --tls-identity NAME   TLS: which PSK identity (default: the file's first)
      --tls-hostname NAME   TLS: name the server's certificate must carry
                            (default: HOST of a tcp: ENDPOINT)
  -v, --verbose             say what happens
  -h, --help                show this help
  -V, --version             show the version

Any --tls-* option makes the connection TLS from its first byte.
Exit status: 0 attached (or stopped by a signal), 1 failure, 2 usage error.
)";

constexpr const char* kDefaultEndpoint = "tcp:127.0.0.1:1337";
constexpr const char* kSwapLabel = "ram-dl";
constexpr uint32_t kMaxRequest = 1 << 20;

struct Options {
  std::string endpoint = kDefaultEndpoint, device, timeout, pidfile;
  int priority = kernel::kSwapPriorityDefault;
  uint32_t max_inflight = wire::kDefaultInflight;
  bool no_swap = false, no_compress = false, foreground = false;
  TlsClientOptions tls;
};

uint64_t seconds_option(const std::string& text, const char* option) {
  auto d = cli::usage_value(parse_duration(text), option);
  auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 1 || s > 24 * 3600) throw cli::UsageError(std::string(option) + ": between 1s and 24h");
  return static_cast<uint64_t>(s);
}

// Attaching a device and swapon need CAP_SYS_ADMIN (locking memory and the
// OOM exemption more of root's capabilities): say so up front rather than
// through whichever call fails first. The effective set is asked, not the
// uid, so a root without it (in a container) hears the same. When the
// status cannot be read, the kernel decides.
bool has_cap_sys_admin() {
  constexpr int kCapSysAdmin = 21;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("CapEff:")) return (std::stoull(line.substr(7), nullptr, 16) >> kCapSysAdmin) & 1;
  return true;
}

// True unless /proc/swaps says dev is not an active swap area (when it
// cannot be read, assume it is: swapoff then decides).
bool is_swap(const std::string& dev) {
  auto area = kernel::find_swap_area(dev);
  return !area || area->has_value();
}

int download_main(int argc, char** argv) {
  Options o;
  bool help = false, version = false;
  po::options_description desc;
  desc.add_options()
      ("device,d", po::value(&o.device))
      ("priority,p", po::value(&o.priority))
      ("no-swap", po::bool_switch(&o.no_swap))
      ("timeout,t", po::value(&o.timeout))
      ("max-inflight", po::value(&o.max_inflight))
      ("no-compress", po::bool_switch(&o.no_compress))
      ("foreground,f", po::bool_switch(&o.foreground))
      ("pidfile", po::value(&o.pidfile))
      ("tls-ca", po::value(&o.tls.ca_file))
      ("tls-cert", po::value(&o.tls.cert_file))
      ("tls-key", po::value(&o.tls.key_file))
      ("tls-psk", po::value(&o.tls.psk_file))
      ("tls-identity", po::value(&o.tls.psk_identity))
      ("tls-hostname", po::value(&o.tls.hostname))
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("endpoint", po::value(&o.endpoint));
  po::variables_map vm;
  int verbose = cli::parse_options(argc, argv, desc, "endpoint", vm);
  if (help) { std::cout << kUsage; return cli::kExitOk; }
  if (version) { std::cout << cli::version_text("ram-dl"); return cli::kExitOk; }
  log::set_verbosity(verbose);

  // Every check of the command line, before anything is opened.
  wire::RemoteTarget target;
  target.endpoint = cli::usage_value(parse_endpoint(o.endpoint), "ENDPOINT");
  if (target.endpoint.kind != Endpoint::Kind::Unix && target.endpoint.kind != Endpoint::Kind::Tcp)
    throw cli::UsageError("ENDPOINT: expected unix:PATH or tcp:HOST:PORT of a ram-ul, not '" + o.endpoint + "'");
  if (o.priority < kernel::kSwapPriorityDefault || o.priority > kernel::kSwapPriorityMax)
    throw cli::UsageError("--priority: between -1 and 32767");
  if (o.no_swap && vm.count("priority")) throw cli::UsageError("--priority applies to swap, not with --no-swap");
  if (o.max_inflight < 1 || o.max_inflight > wire::kMaxInflight)
    throw cli::UsageError("--max-inflight: between 1 and " + std::to_string(wire::kMaxInflight));
  cli::check_tls_client_options(o.tls);
  kernel::StoreAttachOptions attach;
  // The kernel's requests are capped at this (max_sectors_kb), and so is
  // each server worker's buffer: memory that must be found, and locked,
  // while the machine is short of it.
  attach.server.export_config.max_payload = kMaxRequest;
  if (!o.device.empty()) attach.attach.index = cli::usage_value(kernel::parse_device(o.device), "--device");
  if (!o.timeout.empty()) attach.attach.timeout_s = seconds_option(o.timeout, "--timeout");
  wire::RemoteOptions remote;
  remote.outage_timeout = std::chrono::milliseconds(0);  // swap cannot survive EIO: wait for the remote
  remote.max_inflight = o.max_inflight;
  remote.name = "ram-dl";
  if (o.no_compress) remote.features &= ~wire::kFeatureLz4;

  // Credentials that cannot be loaded are a runtime failure (exit 1), found
  // before anything else happens.
  if (cli::tls_client_options_given(o.tls)) {
    if (o.tls.hostname.empty() && target.endpoint.kind == Endpoint::Kind::Tcp) o.tls.hostname = target.endpoint.host;
    auto ctx = TlsClientContext::create(o.tls);
    if (!ctx) return cli::fail("set up TLS", ctx.status());
    target.tls = o.tls;
  }
  if (!has_cap_sys_admin())
    return cli::fail("attach", Status::error(EPERM, "needs root (CAP_SYS_ADMIN)"));
  // Is there a kernel to attach to? Asked before the remote is dialled.
  if (!kernel::nbd_module_loaded())
    return cli::fail("attach", Status::error(ENOENT, "the kernel has no NBD devices: load the module with 'modprobe nbd'"));

  // Fork first, while there is only one thread; the memory lock is not
  // inherited, so the process that stays takes it.
  Readiness readiness = Readiness::foreground();
  if (!o.foreground) {
    auto r = Readiness::background();
    if (!r) return cli::fail("start in the background", r.status());
    readiness = std::move(r).value();
  }
  // Before any buffer of the swap I/O path exists: every page this process
  // touches from here on is locked as it is touched.
  Status locked = enter_swap_path();
  if (!locked) return cli::fail("prepare for swap", locked);

  // Declared before the watcher, whose callback may reach them until it is
  // destroyed.
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  StopHook stop;
  SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    log::info(std::string("caught ") + strsignal(sig) + (o.no_swap ? ", detaching" : ", swapping off and detaching"));
    stop.request();
  });

  auto store = wire::RemoteStore::connect(target, remote);
  if (!store) {
    // A refused connect names the endpoint already; a HELLO or TLS failure
    // does not.
    Status st = store.status();
    if (st.message().find(target.endpoint.to_string()) == std::string::npos) st = st.with_context(target.to_string());
    return cli::fail("borrow memory", st);
  }
  log::info("borrowing " + format_size((*store)->size()) + " from " + target.to_string());
  if ((*store)->is_read_only()) return cli::fail("attach " + target.to_string(), Status::error(EROFS, "the remote is read-only"));

  attach.attach.backend_identifier = "memsync:ram-dl " + target.to_string();
  if (attach.attach.backend_identifier.size() > 255) attach.attach.backend_identifier.resize(255);
  auto attached = kernel::StoreAttachment::attach(*store, attach);
  if (!attached) return cli::fail("attach " + target.to_string(), attached.status());
  auto& attachment = **attached;
  const std::string dev = attachment.device().path();
  log::info("attached " + target.to_string() + " as " + dev);

  // The pid file before swapon, so that failing to write it leaves no swap.
  auto pf = PidFile::write(o.pidfile);
  if (!pf) return cli::fail("write the pid file", pf.status());
  PidFile pidfile = std::move(pf).value();

  if (!o.no_swap) {
    kernel::SwapHeaderOptions header;
    header.label = kSwapLabel;
    auto bytes = kernel::write_swap_header(dev, header);
    if (!bytes) return cli::fail("make " + dev + " a swap area", bytes.status());
    Status on = kernel::swap_on(dev, o.priority);
    if (!on) return cli::fail("swap on " + dev, on);
    log::info("swapping on " + dev + " (" + format_size(*bytes) + ", priority " +
              (o.priority < 0 ? std::string("chosen by the kernel") : std::to_string(o.priority)) + ")");
  }
  readiness.ready(dev);

  stop.set_target([&] {
    std::lock_guard lock(mu);
    stopping = true;
    cv.notify_all();
  });
  const bool swapping = !o.no_swap;
  for (;;) {
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping; });
      if (!stopping) {
        lock.unlock();
        if (attachment.device().connected()) continue;
        // Someone else detached it (nbd-attach --detach). If it was still
        // swap, the pages swapped to it are gone with it.
        if (swapping && is_swap(dev)) {
          kernel::swap_off(dev).ignore();  // fails for pages it cannot read back
          return cli::fail("keep " + dev, Status::error(ENXIO, "detached by someone else while it was swap"));
        }
        log::info(dev + " detached by someone else");
        return cli::kExitOk;
      }
      stopping = false;
    }
    // Someone may have run swapoff already.
    if (!swapping || !is_swap(dev)) break;
    // swapoff reads every swapped page back; without the memory for them
    // it fails, and detaching then would lose them: stay attached.
    Status off = kernel::swap_off(dev);
    if (off) break;
    log::warn("unable to swap off " + dev + ": " + off.message() + "; staying attached (signal again to retry)");
  }
  Status st = attachment.detach();
  if (!st) return cli::fail("detach " + dev, st);
  log::info(dev + " detached");
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("ram-dl", [&] { return download_main(argc, argv); });
}
