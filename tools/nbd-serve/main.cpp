// nbd-serve: serve one backend as an NBD export.
// The man page (man/nbd-serve.1) is the contract; this file only wires
// library pieces: options -> store -> NbdServer -> listeners or stdio.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "backend/open_store.hpp"
#include "managed/open_managed.hpp"
#include "cli/cli.hpp"
#include "cli/tls_options.hpp"
#include "cli/service.hpp"
#include "nbd/server.hpp"
#include "net/endpoint.hpp"
#include "net/tls.hpp"
#include "util/log.hpp"
#include "util/process.hpp"
#include "util/signals.hpp"
#include "util/stop_hook.hpp"
#include "util/units.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: nbd-serve [OPTIONS] BACKEND

Serve BACKEND as an NBD export. Without --listen, serve one connection on
standard input/output (inetd style) or on sockets passed by socket
activation (LISTEN_FDS).

BACKEND is mem:SIZE, file:PATH[?size=SIZE],
dir:PATH?size=SIZE[&chunk=SIZE][&max-open=N], remote:ENDPOINT (a memsync
wire server such as ram-ul), redis:ENDPOINT?size=SIZE or a plain path (see
memsync(7)).

Options:
  -l, --listen ENDPOINT     accept clients on unix:PATH, tcp:HOST:PORT or a
                            listening fd:N; a connected fd:N is one client
      --run COMMAND         run COMMAND with $uri, $exportname and $unixsocket
                            or $port set; stop when it exits, exit with its status
  -n, --name NAME           export name (default: "")
  -d, --description TEXT    export description
  -r, --read-only           refuse writes
      --min-block-size SIZE     minimum block size (default 1)
      --preferred-block-size SIZE  preferred block size (default 4K)
      --max-payload SIZE    largest read or write request (default 32M)
      --max-connections N   concurrent clients (default 64)
      --handshake-timeout DURATION  drop clients that have not finished
                            the handshake within DURATION (default 10s; 0 = never)
  -t, --threads N           concurrent requests per connection (default 16;
                            64 for remote: backends, where each waits a round trip)
      --tls MODE            off, on or require (default off)
      --tls-cert FILE       PEM certificate of this server
      --tls-key FILE        PEM private key of the certificate
      --tls-ca FILE         require client certificates signed by this CA
      --tls-psk FILE        accept pre-shared keys (identity:hexkey lines)
Managed mount (a local cache in front of BACKEND, usually remote:...):
      --cache BACKEND       keep a local copy in BACKEND (a missing file is
                            created with BACKEND's size); reads of chunks not
                            yet local fetch them at once, writes are pushed
                            later, FLUSH pushes everything first
      --chunk-size SIZE     unit of tracking and transfer (default 64K)
      --pull-workers N      background fetchers, in order (default 16; 0: only
                            fetch what is read)
      --push-workers N      pushers of written chunks (default 16; 0: writes
                            stay in the cache)
      --push-interval DURATION  how often written chunks are pushed (default 1s)
      --max-batch SIZE      largest coalesced pull or push request (default 4M,
                            or the chunk size if larger)

  -v, --verbose             log connections; twice: every request
  -h, --help                show this help
  -V, --version             show the version
)";

uint32_t block_size_option(const std::string& text, const char* option, uint64_t max) {
  uint64_t v = cli::usage_value(parse_size(text), option);
  if (v == 0 || v > max || (v & (v - 1)) != 0)
    throw cli::UsageError(std::string(option) + ": must be a power of two between 1 and " + format_size(max));
  return static_cast<uint32_t>(v);
}

int serve_main(int argc, char** argv) {
  std::string listen, run, backend, tls_mode = "off", min_bs = "1", pref_bs = "4K", max_payload = "32M";
  std::string handshake_timeout = "10s";
  nbd::ServerOptions opts;
  TlsServerOptions tls;
  std::string cache, chunk_size = "64K", push_interval = "1s", max_batch = "4M";
  int pull_workers = 16, push_workers = 16;
  bool help = false, version = false;
  int verbose = 0;

  po::options_description desc;
  desc.add_options()
      ("listen,l", po::value(&listen))
      ("run", po::value(&run))
      ("name,n", po::value(&opts.export_config.name))
      ("description,d", po::value(&opts.export_config.description))
      ("read-only,r", po::bool_switch(&opts.export_config.read_only))
      ("min-block-size", po::value(&min_bs))
      ("preferred-block-size", po::value(&pref_bs))
      ("max-payload", po::value(&max_payload))
      ("max-connections", po::value(&opts.max_connections))
      ("handshake-timeout", po::value(&handshake_timeout))
      ("threads,t", po::value(&opts.transmission.threads))
      ("tls", po::value(&tls_mode))
      ("tls-cert", po::value(&tls.cert_file))
      ("tls-key", po::value(&tls.key_file))
      ("tls-ca", po::value(&tls.ca_file))
      ("tls-psk", po::value(&tls.psk_file))
      ("cache", po::value(&cache))
      ("chunk-size", po::value(&chunk_size))
      ("pull-workers", po::value(&pull_workers))
      ("push-workers", po::value(&push_workers))
      ("push-interval", po::value(&push_interval))
      ("max-batch", po::value(&max_batch))
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->notifier([&](int) {})->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("backend", po::value(&backend));
  po::variables_map vm;
  verbose = cli::parse_options(argc, argv, desc, "backend", vm);

  if (help) { std::cout << kUsage; return cli::kExitOk; }
  if (version) { std::cout << cli::version_text("nbd-serve"); return cli::kExitOk; }
  if (backend.empty()) throw cli::UsageError("missing BACKEND (for example mem:1G or disk.img)");
  log::set_verbosity(verbose);

  auto& ec = opts.export_config;
  if (ec.name.size() > 4096) throw cli::UsageError("--name: longer than 4096 bytes");
  if (ec.description.size() > 4096) throw cli::UsageError("--description: longer than 4096 bytes");
  ec.min_block = block_size_option(min_bs, "--min-block-size", 64 * 1024);
  ec.preferred_block = block_size_option(pref_bs, "--preferred-block-size", 32 << 20);
  uint64_t mp = cli::usage_value(parse_size(max_payload), "--max-payload");
  if (mp < 512 || mp > (1u << 30)) throw cli::UsageError("--max-payload: must be between 512 and 1G");
  ec.max_payload = static_cast<uint32_t>(mp);
  if (ec.preferred_block < ec.min_block) throw cli::UsageError("--preferred-block-size is below --min-block-size");
  if (ec.max_payload < ec.preferred_block) throw cli::UsageError("--max-payload is below --preferred-block-size");
  // A request to a remote store holds its thread for a network round trip:
  // 16 of them would cap a 25 ms link at a few hundred MB/s.
  if (!vm.count("threads")) {
    auto spec = parse_backend_spec(backend);
    if (spec && spec->scheme == "remote") opts.transmission.threads = 64;
  }
  if (opts.transmission.threads == 0 || opts.transmission.threads > 1024)
    throw cli::UsageError("--threads: must be between 1 and 1024");
  if (opts.max_connections == 0) throw cli::UsageError("--max-connections: must be at least 1");
  auto hs = cli::usage_value(parse_duration(handshake_timeout), "--handshake-timeout");
  if (hs > std::chrono::hours(24)) throw cli::UsageError("--handshake-timeout: at most 24h");
  opts.handshake_timeout_ms = static_cast<unsigned>(std::chrono::duration_cast<std::chrono::milliseconds>(hs).count());
  if (hs.count() > 0 && opts.handshake_timeout_ms == 0) opts.handshake_timeout_ms = 1;

  if (tls_mode == "off") ec.tls = nbd::TlsMode::Off;
  else if (tls_mode == "on") ec.tls = nbd::TlsMode::On;
  else if (tls_mode == "require") ec.tls = nbd::TlsMode::Require;
  else throw cli::UsageError("--tls: expected off, on or require, not '" + tls_mode + "'");
  if (ec.tls == nbd::TlsMode::Off && cli::tls_server_options_given(tls))
    throw cli::UsageError("TLS files given but --tls is off (use --tls on or require)");
  if (ec.tls != nbd::TlsMode::Off) cli::check_tls_server_options(tls);

  ManagedOptions managed;
  for (const char* o : {"chunk-size", "pull-workers", "push-workers", "push-interval", "max-batch"})
    if (cache.empty() && vm.count(o) && !vm[o].defaulted()) throw cli::UsageError(std::string("--") + o + " needs --cache");
  if (!cache.empty()) {
    if (pull_workers < 0) throw cli::UsageError("--pull-workers: must be 0 or more");
    if (push_workers < 0) throw cli::UsageError("--push-workers: must be 0 or more");
    managed.pull_workers = static_cast<unsigned>(pull_workers);
    managed.push_workers = static_cast<unsigned>(push_workers);
    if (pull_workers > 1024 || push_workers > 1024) throw cli::UsageError("--pull-workers, --push-workers: at most 1024");
    uint64_t cs = cli::usage_value(parse_size(chunk_size), "--chunk-size");
    if (cs < 512 || cs > (64u << 20) || (cs & (cs - 1)) != 0)
      throw cli::UsageError("--chunk-size: must be a power of two from 512 to 64M");
    uint64_t mb = cli::usage_value(parse_size(max_batch), "--max-batch");
    if (!vm.count("max-batch")) mb = std::max(mb, cs);  // the default follows a large chunk
    if (mb < cs || mb > (64u << 20)) throw cli::UsageError("--max-batch: must be from --chunk-size to 64M");
    managed.chunk_size = static_cast<uint32_t>(cs);
    managed.max_batch = static_cast<uint32_t>(mb);
    managed.push_interval = std::chrono::duration_cast<std::chrono::milliseconds>(
        cli::usage_value(parse_duration(push_interval), "--push-interval"));
    if (managed.push_interval.count() <= 0) throw cli::UsageError("--push-interval: must be at least 1ms");
    cli::usage_check(check_managed_options(managed));
    cli::usage_check(validate_backend_spec(cache));
  }

  cli::ServiceSpec service_spec = cli::parse_service_options(listen, run);
  if (!service_spec.listen && !service_spec.connected_fd && run.empty() && ::isatty(STDIN_FILENO) &&
      std::getenv("LISTEN_FDS") == nullptr)
    throw cli::UsageError("standard input is a terminal: give --listen ENDPOINT, or connect stdin to a client");
  cli::usage_check(validate_backend_spec(backend));

  // Everything from here on acts. Signals are watched first, so a SIGTERM
  // that arrives while we are still setting up is a clean stop, not a kill.
  StopHook stop, give_up;
  SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    if (!stop.requested()) {
      log::info(std::string("caught ") + strsignal(sig) + ", shutting down");
      stop.request();
    } else {
      // The final sync may wait for a remote that is gone (its timeout=):
      // a second signal gives up on it.
      log::warn(std::string("caught ") + strsignal(sig) + " again: not waiting for the backend any longer");
      give_up.request();
    }
  });

  if (ec.tls != nbd::TlsMode::Off) {
    auto ctx = TlsServerContext::create(tls);
    if (!ctx) return cli::fail("set up TLS", ctx.status());
    ec.tls_context = std::move(ctx).value();
  }
  Result<std::shared_ptr<Store>> store = Status::ok();
  if (cache.empty()) {
    store = open_store(backend, OpenOptions{ec.read_only});
  } else {
    auto m = open_managed_store(backend, cache, managed, OpenOptions{ec.read_only});
    if (m) store = std::shared_ptr<Store>(*m);
    else store = m.status();
  }
  if (!store) return cli::fail("open the backend", store.status());
  give_up.set_target([s = *store] { s->interrupt(); });
  auto service = cli::Service::open(service_spec);
  if (!service) return cli::fail("set up the connection", service.status());
  auto& svc = **service;

  nbd::NbdServer server(*store, opts);
  stop.set_target([&] {
    svc.terminate_command();
    server.stop();
  });

  if (svc.single()) {
    auto ch = svc.take_connection();
    Status st = server.serve(*ch);
    Status synced = (*store)->sync();
    int code = cli::kExitOk;
    if (!st) code = cli::fail("serve the connection", st);
    if (!synced) code = cli::fail("sync the backend", synced);
    return code;
  }

  if (svc.address()) log::info("serving " + (*store)->describe() + " on " + svc.address()->to_string());
  if (svc.has_command()) {
    if (!svc.address()) return cli::fail("find the listening address", Status::invalid("unknown socket"));
    const Endpoint& where = *svc.address();
    std::map<std::string, std::string> env;
    env["uri"] = cli::nbd_uri(where, ec.name, ec.tls == nbd::TlsMode::Require);
    env["exportname"] = ec.name;
    if (where.kind == Endpoint::Kind::Unix) env["unixsocket"] = where.path;
    else env["port"] = std::to_string(where.port);
    Status st = svc.start_command(env, [&] { server.stop(); });
    if (!st) return cli::fail("run '" + run + "'", st);
  }
  Status st = server.run(svc.take_listeners());
  if (!st) return cli::fail("serve", st);
  return svc.has_command() ? svc.command_exit_code() : cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("nbd-serve", [&] { return serve_main(argc, argv); });
}
