// ram-ul: offer memory (or a file or directory backend) over the memsync
// wire protocol, for ram-dl, `nbd-serve remote:...` and managed mounts.
// The man page (man/ram-ul.1) is the contract; this file only wires
// library pieces: options -> store -> WireServer -> listeners.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdlib>
#include <iostream>

#include "backend/open_store.hpp"
#include "cli/cli.hpp"
#include "cli/tls_options.hpp"
#include "cli/service.hpp"
#include "util/log.hpp"
#include "util/signals.hpp"
#include "util/stop_hook.hpp"
#include "util/units.hpp"
#include "wire/server.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: ram-ul [OPTIONS] [BACKEND]

Offer BACKEND over the memsync wire protocol (memsync-wire(7)), to ram-dl,
to `nbd-serve remote:ENDPOINT`, or to any other client of the protocol.
Without BACKEND, offer --size bytes of memory (mem:SIZE). BACKEND is a
memsync(7) backend spec: mem:SIZE, file:PATH, dir:PATH?size=SIZE, a path.

Options:
  -l, --listen ENDPOINT     accept clients on unix:PATH or tcp:HOST:PORT
                            (default tcp:127.0.0.1:1337: loopback only;
                            listening wider must be asked for, e.g. tcp:*:1337)
  -s, --size SIZE           memory to offer when no BACKEND is given (default 4G)
  -r, --read-only           refuse writes
      --max-payload SIZE    largest request a client may send (default 4M, 4K..32M)
      --max-connections N   concurrent clients (default 64)
  -t, --threads N           workers per connection (default 8)
      --no-compress         do not offer LZ4 compression
      --tls-cert FILE       speak TLS only, with this PEM certificate
      --tls-key FILE        PEM private key of the certificate
      --tls-ca FILE         require client certificates signed by this CA
      --tls-psk FILE        speak TLS only, accepting these pre-shared keys
                            (identity:hexkey lines)
  -v, --verbose             log connections; twice: every failed request
  -h, --help                show this help
  -V, --version             show the version
)";

int upload_main(int argc, char** argv) {
  std::string listen = "tcp:127.0.0.1:1337", size = "4G", backend, max_payload = "4M";
  wire::WireServerOptions opts;
  TlsServerOptions tls;
  bool read_only = false, no_compress = false, help = false, version = false;
  po::options_description desc;
  desc.add_options()
      ("listen,l", po::value(&listen))
      ("size,s", po::value(&size))
      ("read-only,r", po::bool_switch(&read_only))
      ("max-payload", po::value(&max_payload))
      ("max-connections", po::value(&opts.max_connections))
      ("threads,t", po::value(&opts.threads))
      ("no-compress", po::bool_switch(&no_compress))
      ("tls-cert", po::value(&tls.cert_file))
      ("tls-key", po::value(&tls.key_file))
      ("tls-ca", po::value(&tls.ca_file))
      ("tls-psk", po::value(&tls.psk_file))
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("backend", po::value(&backend));
  po::variables_map vm;
  int verbose = cli::parse_options(argc, argv, desc, "backend", vm);
  if (help) { std::cout << kUsage; return cli::kExitOk; }
  if (version) { std::cout << cli::version_text("ram-ul"); return cli::kExitOk; }
  log::set_verbosity(verbose);

  if (!backend.empty() && vm.count("size") && !vm["size"].defaulted())
    throw cli::UsageError("--size applies to the default memory backend; BACKEND has its own size");
  if (backend.empty()) {
    uint64_t bytes = cli::usage_value(parse_size(size), "--size");
    if (bytes == 0) throw cli::UsageError("--size: must be more than 0");
    backend = "mem:" + std::to_string(bytes);
  }
  cli::usage_check(validate_backend_spec(backend));
  uint64_t mp = cli::usage_value(parse_size(max_payload), "--max-payload");
  if (mp < wire::kMinPayload || mp > wire::kMaxPayload) throw cli::UsageError("--max-payload: must be between 4K and 32M");
  opts.max_payload = static_cast<uint32_t>(mp);
  if (opts.threads == 0 || opts.threads > 1024) throw cli::UsageError("--threads: must be between 1 and 1024");
  if (opts.max_connections == 0) throw cli::UsageError("--max-connections: must be at least 1");
  if (no_compress) opts.features &= ~wire::kFeatureLz4;
  opts.read_only = read_only;
  bool want_tls = cli::tls_server_options_given(tls);
  if (want_tls) cli::check_tls_server_options(tls);
  // Socket activation replaces the default listener, not an explicit one.
  bool activated = std::getenv("LISTEN_FDS") != nullptr && !vm.count("listen");
  cli::ServiceSpec service_spec = cli::parse_service_options(activated ? "" : listen, "");
  if (service_spec.connected_fd) throw cli::UsageError("--listen: ram-ul needs a listening socket, not a connection");
  // Usage is settled: from here on, files are read and things are created.
  if (want_tls) {
    auto ctx = TlsServerContext::create(tls);
    if (!ctx) return cli::fail("set up TLS", ctx.status());
    opts.tls = std::move(ctx).value();
  }

  StopHook stop;
  SignalWatcher signals({SIGINT, SIGTERM, SIGHUP}, [&](int sig) {
    log::info(std::string("caught ") + strsignal(sig) + ", shutting down");
    stop.request();
  });
  auto store = open_store(backend, OpenOptions{read_only});
  if (!store) return cli::fail("open the backend", store.status());
  auto service = cli::Service::open(service_spec);
  if (!service) return cli::fail("listen", service.status());
  auto& svc = **service;
  if (svc.single()) throw cli::UsageError("give --listen ENDPOINT (or sockets by activation)");
  wire::WireServer server(*store, opts);
  stop.set_target([&] { server.stop(); });
  if (svc.address())
    log::info("offering " + (*store)->describe() + " on " + svc.address()->to_string() + (opts.tls ? " (TLS)" : ""));
  Status st = server.run(svc.take_listeners());
  if (!st) return cli::fail("serve", st);
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("ram-ul", [&] { return upload_main(argc, argv); });
}
