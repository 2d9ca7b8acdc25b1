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
#include "cli/cli.hpp"
#include "nbd/server.hpp"
#include "net/endpoint.hpp"
#include "net/tls.hpp"
#include "util/log.hpp"
#include "util/process.hpp"
#include "util/signals.hpp"
#include "util/units.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: nbd-serve [OPTIONS] BACKEND

Serve BACKEND as an NBD export. Without --listen, serve one connection on
standard input/output (inetd style) or on sockets passed by socket
activation (LISTEN_FDS).

BACKEND is mem:SIZE, file:PATH[?size=SIZE], dir:PATH?size=SIZE[&chunk=SIZE]
or a plain path (see memsync(7)).

Options:
  -l, --listen ENDPOINT     accept clients on unix:PATH or tcp:HOST:PORT
      --run COMMAND         run COMMAND with $uri and $unixsocket set; stop
                            when it exits and exit with its status
  -n, --name NAME           export name (default: "")
  -d, --description TEXT    export description
  -r, --read-only           refuse writes
      --min-block-size SIZE     minimum block size (default 1)
      --preferred-block-size SIZE  preferred block size (default 4K)
      --max-payload SIZE    largest read or write request (default 32M)
      --max-connections N   concurrent clients (default 64)
      --handshake-timeout DURATION  drop clients that have not finished
                            the handshake by then (default 10s; 0 = never)
  -t, --threads N           concurrent requests per connection (default 16)
      --tls MODE            off, on or require (default off)
      --tls-cert FILE       PEM certificate of this server
      --tls-key FILE        PEM private key of the certificate
      --tls-ca FILE         require client certificates signed by this CA
      --tls-psk FILE        accept pre-shared keys (identity:hexkey lines)
  -v, --verbose             log connections; twice: every request
  -h, --help                show this help
  -V, --version             show the version
)";

std::string uri_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') out.push_back(static_cast<char>(c));
    else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// The NBD URI a client would use to reach `ep` (for --run's $uri).
std::string nbd_uri(const Endpoint& ep, const std::string& name, bool tls) {
  std::string scheme = tls ? "nbds" : "nbd";
  if (ep.kind == Endpoint::Kind::Unix)
    return scheme + "+unix:///" + uri_escape(name) + "?socket=" + uri_escape(ep.path);
  std::string host = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
  return scheme + "://" + host + ":" + std::to_string(ep.port) + "/" + uri_escape(name);
}

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
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->notifier([&](int) {})->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("backend", po::value(&backend));
  po::positional_options_description pos;
  pos.add("backend", 1);
  po::variables_map vm;
  auto parsed = po::command_line_parser(argc, argv).options(desc).positional(pos).run();
  for (auto& o : parsed.options)
    if (o.string_key == "verbose") ++verbose;
  po::store(parsed, vm);
  po::notify(vm);

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
  bool tls_files = !tls.cert_file.empty() || !tls.key_file.empty() || !tls.ca_file.empty() || !tls.psk_file.empty();
  if (ec.tls == nbd::TlsMode::Off && tls_files) throw cli::UsageError("TLS files given but --tls is off (use --tls on or require)");
  if (ec.tls != nbd::TlsMode::Off) {
    auto ctx = TlsServerContext::create(tls);
    if (!ctx) return cli::fail("set up TLS", ctx.status());
    ec.tls_context = std::move(ctx).value();
  }

  std::optional<Endpoint> listen_ep;
  if (!listen.empty()) listen_ep = cli::usage_value(parse_endpoint(listen), "--listen");
  if (listen_ep && listen_ep->kind == Endpoint::Kind::Stdio)
    throw cli::UsageError("--listen -: standard input is served without --listen");
  // fd:N names either a listening socket (accept on it) or one connection.
  std::optional<int> connected_fd;
  if (listen_ep && listen_ep->kind == Endpoint::Kind::Fd && !is_listening_socket(listen_ep->fd)) {
    if (::fcntl(listen_ep->fd, F_GETFD) < 0) throw cli::UsageError("--listen fd:" + std::to_string(listen_ep->fd) + ": no such descriptor");
    connected_fd = listen_ep->fd;
    listen_ep.reset();
  }

  auto store = open_store(backend, OpenOptions{ec.read_only});
  if (!store) return cli::fail("open backend '" + backend + "'", store.status());

  // Listeners: --listen, else socket activation, else a private socket for --run.
  // --listen wins over socket activation; activated sockets are left alone then.
  std::vector<UniqueFd> listeners;
  if (!listen_ep && !connected_fd) listeners = take_activated_sockets();
  std::filesystem::path run_dir;
  if (listen_ep) {
    auto l = listen_endpoint(*listen_ep);
    if (!l) return cli::fail("listen on " + listen, l.status());
    listeners = std::move(l).value();
  } else if (listeners.empty() && !run.empty()) {
    char tmpl[] = "/tmp/nbd-serve.XXXXXX";
    if (!::mkdtemp(tmpl)) return cli::fail("create a socket directory", Status::from_errno("mkdtemp"));
    run_dir = tmpl;
    Endpoint ep;
    ep.kind = Endpoint::Kind::Unix;
    ep.path = (run_dir / "nbd.sock").string();
    auto l = listen_endpoint(ep);
    if (!l) return cli::fail("listen on " + ep.to_string(), l.status());
    listeners = std::move(l).value();
  }

  nbd::NbdServer server(*store, opts);
  int exit_code = cli::kExitOk;

  if (listeners.empty()) {
    // One connection: fd:N, or stdin/stdout.
    if (!run.empty()) throw cli::UsageError("--run needs a socket to listen on: it cannot serve a single connection");
    if (!connected_fd && ::isatty(STDIN_FILENO))
      throw cli::UsageError("standard input is a terminal: give --listen ENDPOINT, or connect stdin to a client");
    SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int) { server.stop(); });
    Channel ch = connected_fd ? Channel(UniqueFd(*connected_fd))
                              : Channel(UniqueFd(::dup(STDIN_FILENO)), UniqueFd(::dup(STDOUT_FILENO)));
    Status st = server.serve(ch);
    Status synced = (*store)->sync();
    if (!st) exit_code = cli::fail("serve the connection", st);
    if (!synced) exit_code = cli::fail("sync the backend", synced);
    return exit_code;
  }

  auto where = local_endpoint(listeners.front().get());
  if (where) log::info("serving " + (*store)->describe() + " on " + where->to_string());

  pid_t child = -1;
  std::jthread child_waiter;
  int child_code = 0;
  SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    log::info(std::string("caught ") + strsignal(sig) + ", shutting down");
    if (child > 0) ::kill(child, SIGTERM);
    server.stop();
  });
  if (!run.empty()) {
    if (!where) return cli::fail("find the listening address", where.status());
    std::map<std::string, std::string> env;
    const bool tls_uri = ec.tls == nbd::TlsMode::Require;
    env["uri"] = nbd_uri(*where, ec.name, tls_uri);
    env["exportname"] = ec.name;
    if (where->kind == Endpoint::Kind::Unix) env["unixsocket"] = where->path;
    else env["port"] = std::to_string(where->port);
    auto pid = spawn_shell(run, env);
    if (!pid) return cli::fail("run '" + run + "'", pid.status());
    child = *pid;
    child_waiter = std::jthread([&] {
      auto code = wait_exit_code(child);
      child_code = code ? *code : cli::kExitFailure;
      server.stop();
    });
  }
  Status st = server.run(std::move(listeners));
  if (child_waiter.joinable()) child_waiter.join();
  if (!run_dir.empty()) std::filesystem::remove_all(run_dir);
  if (!st) return cli::fail("serve", st);
  return run.empty() ? cli::kExitOk : child_code;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("nbd-serve", [&] { return serve_main(argc, argv); });
}
