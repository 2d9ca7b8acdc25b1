// nbd-attach: attach an NBD export to the kernel as /dev/nbdN.
// The man page (man/nbd-attach.1) is the contract; this file only wires
// library pieces: options -> Connector -> AttachedDevice -> Supervisor.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <string_view>

#include "backend/spec.hpp"
#include "cli/cli.hpp"
#include "cli/tls_options.hpp"
#include "kernel/attach.hpp"
#include "kernel/connector.hpp"
#include "kernel/nbd_device.hpp"
#include "kernel/supervisor.hpp"
#include "net/nbd_uri.hpp"
#include "net/tls.hpp"
#include "util/log.hpp"
#include "util/readiness.hpp"
#include "util/signals.hpp"
#include "util/swap_path.hpp"
#include "util/units.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: nbd-attach [OPTIONS] ENDPOINT | NBD-URI
       nbd-attach [OPTIONS] -- COMMAND [ARGS...]
       nbd-attach --detach DEVICE
       nbd-attach --list

Attach an NBD export to the kernel and print the device (/dev/nbdN) once it
is ready for I/O. ENDPOINT is unix:PATH or tcp:HOST:PORT; an NBD URI is
nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, or nbds:// for
TLS. After --, COMMAND is an NBD server started for the device (for example
nbd-serve disk.img) that nbd-attach supervises.

Options:
  -d, --device DEVICE       use /dev/nbdN (default: the kernel picks a free one)
  -n, --name EXPORT         export name for an ENDPOINT (default: "")
  -C, --connections N       connections to the server (default 1; more needs
                            a server that allows multi-conn)
  -r, --read-only           attach read-only
  -b, --block-size SIZE     logical block size, 512 to 4K (default: the
                            server's minimum, at least 512)
  -t, --timeout DURATION    fail a request the server does not answer in time
      --persist             keep running; when the connection dies, reconnect
                            and resume I/O on the same device
      --dead-timeout DURATION  with --persist: how long the kernel holds I/O
                            while reconnecting (default 2m)
      --swap                lock memory, OOM-proof and mark as I/O flusher
                            this process and a spawned server (for swap)
      --ioctl               attach through ioctls instead of netlink
  -f, --foreground          stay in the foreground when staying around
  -p, --pidfile FILE        write the pid of the process that stays
      --tls-ca FILE         CA for the server's certificate (nbds://)
      --tls-cert FILE       client certificate (nbds://)
      --tls-key FILE        key of the client certificate
      --tls-psk FILE        pre-shared keys (identity:hexkey lines)
      --detach DEVICE       detach DEVICE and exit
  -l, --list                list NBD devices and exit
  -v, --verbose             say what happens
  -h, --help                show this help
  -V, --version             show the version

Exit status: 0 attached (or detached on request), 1 failure, 2 usage error,
3 the server went away and the device was detached.
)";

constexpr int kExitServerGone = 3;

struct Options {
  std::string target, device, name, block_size, timeout, dead_timeout = "2m", pidfile, detach;
  std::vector<std::string> command;
  unsigned connections = 1;
  bool read_only = false, persist = false, swap = false, ioctl = false, foreground = false, list = false;
  TlsClientOptions tls;
};

uint64_t seconds_option(const std::string& text, const char* option) {
  auto d = cli::usage_value(parse_duration(text), option);
  auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 1 || s > 24 * 3600) throw cli::UsageError(std::string(option) + ": between 1s and 24h");
  return static_cast<uint64_t>(s);
}

int list_devices() {
  auto devs = kernel::list_devices();
  if (!devs) return cli::fail("list NBD devices", devs.status());
  if (devs->empty()) return cli::fail("list NBD devices", Status::error(ENOENT, "there are no NBD devices: is the nbd module loaded? (modprobe nbd)"));
  std::printf("%-12s %-12s %10s %8s  %s\n", "DEVICE", "STATE", "SIZE", "PID", "BACKEND");
  for (auto& d : *devs) {
    std::printf("%-12s %-12s %10s %8s  %s\n", kernel::device_path(d.index).c_str(),
                d.connected ? "connected" : "disconnected", d.connected ? format_size(d.size_bytes).c_str() : "-",
                d.pid ? std::to_string(*d.pid).c_str() : "-", d.backend.empty() ? "-" : d.backend.c_str());
  }
  return cli::kExitOk;
}

// A spawned server whose data lives only in its memory cannot be restarted
// without losing what was written: --persist refuses it.
bool volatile_backend(const std::vector<std::string>& command) {
  for (size_t i = 1; i < command.size(); ++i) {
    auto spec = parse_backend_spec(command[i]);
    if (spec && spec->scheme == "mem" && command[i].starts_with("mem:")) return true;
  }
  return false;
}

// Grammar errors throw UsageError (exit 2); credentials that cannot be
// loaded are a runtime failure (exit 1), as in nbd-serve.
Result<std::unique_ptr<kernel::Connector>> make_connector(Options& o) {
  if (!o.command.empty()) {
    std::map<std::string, std::string> env;
    if (o.swap) env[kSwapPathEnv] = "1";
    return std::unique_ptr<kernel::Connector>(std::make_unique<kernel::CommandConnector>(o.command, env));
  }
  if (is_nbd_uri(o.target)) {
    auto uri = cli::usage_value(parse_nbd_uri(o.target), "NBD URI");
    if (!o.name.empty()) throw cli::UsageError("--name: the URI already names the export");
    for (auto& [k, v] : uri.query) {
      if (k == "tls-certificates") {
        // The libnbd/gnutls layout of a certificate directory.
        o.tls.ca_file = v + "/ca-cert.pem";
        if (::access((v + "/client-cert.pem").c_str(), R_OK) == 0) {
          o.tls.cert_file = v + "/client-cert.pem";
          o.tls.key_file = v + "/client-key.pem";
        }
      } else if (k == "tls-psk-file") {
        o.tls.psk_file = v;
      } else if (k == "tls-verify-peer") {
        o.tls.verify_peer = !(v == "false" || v == "0" || v == "no");
      } else if (k == "tls-hostname") {
        o.tls.hostname = v;
      } else {
        throw cli::UsageError("NBD URI: unsupported query parameter '" + k + "'");
      }
    }
    std::shared_ptr<TlsClientContext> tls;
    if (uri.tls) {
      o.tls.psk_identity = uri.user;
      if (o.tls.hostname.empty() && uri.endpoint.kind == Endpoint::Kind::Tcp) o.tls.hostname = uri.endpoint.host;
      auto ctx = TlsClientContext::create(o.tls);
      if (!ctx) return ctx.status().with_context("set up TLS");
      tls = std::move(ctx).value();
    } else if (cli::tls_client_options_given(o.tls)) {
      throw cli::UsageError("TLS options need an nbds:// URI");
    }
    return std::unique_ptr<kernel::Connector>(
        std::make_unique<kernel::EndpointConnector>(uri.endpoint, uri.export_name, tls));
  }
  auto ep = cli::usage_value(parse_endpoint(o.target), "ENDPOINT");
  if (ep.kind != Endpoint::Kind::Unix && ep.kind != Endpoint::Kind::Tcp)
    throw cli::UsageError("ENDPOINT: expected unix:PATH, tcp:HOST:PORT or an NBD URI, not '" + o.target + "'");
  if (cli::tls_client_options_given(o.tls)) throw cli::UsageError("TLS options need an nbds:// URI");
  return std::unique_ptr<kernel::Connector>(std::make_unique<kernel::EndpointConnector>(ep, o.name, nullptr));
}

int attach_main(int argc, char** argv) {
  // Everything after the first "--" is the server command, untouched.
  int split = argc;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      split = i;
      break;
    }
  Options o;
  bool help = false, version = false;
  int verbose = 0;
  po::options_description desc;
  desc.add_options()
      ("device,d", po::value(&o.device))
      ("name,n", po::value(&o.name))
      ("connections,C", po::value(&o.connections))
      ("read-only,r", po::bool_switch(&o.read_only))
      ("block-size,b", po::value(&o.block_size))
      ("timeout,t", po::value(&o.timeout))
      ("persist", po::bool_switch(&o.persist))
      ("dead-timeout", po::value(&o.dead_timeout))
      ("swap", po::bool_switch(&o.swap))
      ("ioctl", po::bool_switch(&o.ioctl))
      ("foreground,f", po::bool_switch(&o.foreground))
      ("pidfile,p", po::value(&o.pidfile))
      ("tls-ca", po::value(&o.tls.ca_file))
      ("tls-cert", po::value(&o.tls.cert_file))
      ("tls-key", po::value(&o.tls.key_file))
      ("tls-psk", po::value(&o.tls.psk_file))
      ("detach", po::value(&o.detach))
      ("list,l", po::bool_switch(&o.list))
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("target", po::value(&o.target));
  po::variables_map vm;
  verbose = cli::parse_options(split, argv, desc, "target", vm);
  for (int i = split + 1; i < argc; ++i) o.command.emplace_back(argv[i]);

  if (help) { std::cout << kUsage; return cli::kExitOk; }
  if (version) { std::cout << cli::version_text("nbd-attach"); return cli::kExitOk; }
  log::set_verbosity(verbose);

  if (o.list) return list_devices();
  if (!o.detach.empty()) {
    uint32_t index = cli::usage_value(kernel::parse_device(o.detach), "--detach");
    Status st = kernel::detach_device(index);
    if (!st) return cli::fail("detach " + kernel::device_path(index), st);
    return cli::kExitOk;
  }

  if (split < argc && o.command.empty()) throw cli::UsageError("nothing after --: give the server COMMAND");
  if (o.command.empty() && o.target.empty())
    throw cli::UsageError("give an ENDPOINT, an NBD URI, or -- COMMAND (for example: nbd-attach -- nbd-serve disk.img)");
  if (!o.command.empty() && !o.target.empty())
    throw cli::UsageError("give either ENDPOINT or -- COMMAND, not both");
  if (!o.command.empty() && !o.name.empty()) throw cli::UsageError("--name applies to an ENDPOINT, not a COMMAND");
  if (o.connections < 1 || o.connections > 64) throw cli::UsageError("--connections: between 1 and 64");
  if (o.persist && !o.command.empty() && volatile_backend(o.command))
    throw cli::UsageError("--persist would restart a server whose data is only in memory (mem:), losing it; "
                          "serve a file or run the server yourself");
  if (o.persist && o.ioctl) throw cli::UsageError("--persist needs netlink, not --ioctl");
  if (vm.count("dead-timeout") && !o.persist) throw cli::UsageError("--dead-timeout applies only with --persist");
  cli::check_tls_client_options(o.tls);

  kernel::AttachOptions attach;
  if (!o.device.empty()) attach.index = cli::usage_value(kernel::parse_device(o.device), "--device");
  if (!o.block_size.empty()) {
    uint64_t bs = cli::usage_value(parse_size(o.block_size), "--block-size");
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (bs < 512 || bs > page || (bs & (bs - 1)))
      throw cli::UsageError("--block-size: the kernel takes a power of two from 512 to the page size (" +
                            format_size(page) + ")");
    attach.block_size = static_cast<uint32_t>(bs);
  }
  if (!o.timeout.empty()) attach.timeout_s = seconds_option(o.timeout, "--timeout");
  if (o.persist) attach.dead_conn_timeout_s = seconds_option(o.dead_timeout, "--dead-timeout");
  attach.read_only = o.read_only;
  attach.use_ioctl = o.ioctl;
  auto made = make_connector(o);
  if (!made) return cli::fail("attach", made.status());
  auto connector = std::move(made).value();
  attach.backend_identifier = "memsync:" + connector->describe();
  if (attach.backend_identifier.size() > 255) attach.backend_identifier.resize(255);

  // Before anything acts: is there a kernel to attach to?
  if (!kernel::nbd_module_loaded())
    return cli::fail("attach", Status::error(ENOENT, "the kernel has no NBD devices: load the module with 'modprobe nbd'"));
  std::unique_ptr<kernel::NbdNetlink> netlink;
  if (!o.ioctl) {
    auto nl = kernel::NbdNetlink::open();
    if (nl) {
      netlink = std::move(nl).value();
    } else {
      log::info("no nbd netlink family in this kernel: using the ioctl interface");
      attach.use_ioctl = true;
    }
  }
  const bool tls = is_nbd_uri(o.target) && parse_nbd_uri(o.target)->tls;
  const bool stays = !o.command.empty() || o.persist || tls || attach.use_ioctl;
  if (!stays && (o.foreground || !o.pidfile.empty()))
    log::info("--foreground and --pidfile do nothing here: nbd-attach exits once the device is attached");

  // Fork first, while there is only one thread.
  Readiness readiness = Readiness::foreground();
  if (stays && !o.foreground) {
    auto r = Readiness::background();
    if (!r) return cli::fail("start in the background", r.status());
    readiness = std::move(r).value();
  }
  if (o.swap) {
    Status st = enter_swap_path();
    if (!st) return cli::fail("prepare for swap", st);
  }
  kernel::SuperviseOptions sup_opts;
  sup_opts.persist = o.persist;
  sup_opts.connections = o.connections;
  sup_opts.watch_links = !attach.use_ioctl;
  if (attach.dead_conn_timeout_s) sup_opts.dead_timeout = std::chrono::seconds(*attach.dead_conn_timeout_s);
  auto supervisor = kernel::Supervisor::create(sup_opts);
  if (!supervisor) return cli::fail("supervise", supervisor.status());
  auto& sup = **supervisor;
  SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    log::info(std::string("caught ") + strsignal(sig) + ", detaching");
    sup.stop();
  });

  auto conns = connector->connect(o.connections);
  if (!conns) return cli::fail("attach", conns.status());
  auto dev = kernel::AttachedDevice::attach(std::move(conns).value(), attach, std::move(netlink));
  if (!dev) {
    (void)connector->stop_server(std::chrono::seconds(5));
    return cli::fail("attach " + connector->describe(), dev.status());
  }
  auto& device = **dev;
  log::info("attached " + connector->describe() + " as " + device.path() + " (" +
            format_size(device.request().size_bytes) + (device.via_ioctl() ? ", ioctl)" : ", netlink)"));
  PidFile pidfile;
  if (stays) {
    auto pf = PidFile::write(o.pidfile);
    if (!pf) {
      sup.stop();
      (void)sup.run(device, *connector);
      return cli::fail("write the pid file", pf.status());
    }
    pidfile = std::move(pf).value();
  }
  readiness.ready(device.path());
  if (!stays) return cli::kExitOk;

  auto outcome = sup.run(device, *connector);
  if (!outcome) return cli::fail("supervise " + device.path(), outcome.status());
  switch (*outcome) {
    case kernel::Supervisor::Outcome::Stopped:
    case kernel::Supervisor::Outcome::Detached:
      log::info(device.path() + " detached");
      return cli::kExitOk;
    case kernel::Supervisor::Outcome::ServerGone:
      return kExitServerGone;
  }
  return cli::kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("nbd-attach", [&] { return attach_main(argc, argv); });
}
