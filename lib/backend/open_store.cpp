#include "backend/open_store.hpp"

#include "backend/dir_store.hpp"
#include "backend/file_store.hpp"
#include "backend/mem_store.hpp"
#include "backend/redis_store.hpp"

#include <fstream>
#include "net/endpoint.hpp"
#include "util/units.hpp"
#include "wire/remote_store.hpp"

namespace memsync {
namespace {

// Everything open_store needs, checked without touching the system, so
// that tools can refuse a bad spec as a usage error before they act.
struct Plan {
  BackendSpec spec;
  uint64_t mem_size = 0;
  FileStoreOptions file;
  DirStoreOptions dir;
  wire::RemoteTarget remote;
  wire::RemoteOptions remote_opts;
  Endpoint redis;
  RedisStoreOptions redis_opts;
};

Status check_params(const BackendSpec& spec, std::initializer_list<std::string_view> allowed) {
  for (auto& [key, value] : spec.params) {
    bool ok = false;
    for (auto a : allowed) ok = ok || a == key;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return Status::invalid("backend '" + spec.text + "': unknown parameter '" + key + "'" +
                             (list.empty() ? " (it takes none)" : " (accepted: " + list + ")"));
    }
  }
  return Status::ok();
}

Result<std::optional<uint64_t>> size_param(const BackendSpec& spec, const std::string& key) {
  auto it = spec.params.find(key);
  if (it == spec.params.end()) return std::optional<uint64_t>();
  auto v = parse_size(it->second);
  if (!v) return v.status().with_context("backend '" + spec.text + "': " + key);
  return std::optional<uint64_t>(*v);
}

Result<bool> yes_no(const BackendSpec& spec, const std::string& key, const std::string& value) {
  if (value == "yes" || value == "on" || value == "true" || value == "1") return true;
  if (value == "no" || value == "off" || value == "false" || value == "0") return false;
  return Status::invalid("backend '" + spec.text + "': " + key + " must be yes or no, not '" + value + "'");
}

// remote:ENDPOINT?... parameters (see wire/remote_target.hpp).
Status remote_params(const BackendSpec& spec, Plan& p) {
  MEMSYNC_TRY(check_params(spec, {"tls", "tls-ca", "tls-cert", "tls-key", "tls-psk", "tls-identity", "tls-hostname",
                                  "tls-verify", "compress", "timeout"}));
  TlsClientOptions tls;
  bool want_tls = false;
  for (auto& [key, value] : spec.params) {
    if (key == "timeout") {
      auto d = parse_duration(value);
      if (!d) return d.status().with_context("backend '" + spec.text + "': timeout");
      p.remote_opts.outage_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
      if (d->count() > 0 && p.remote_opts.outage_timeout.count() == 0) p.remote_opts.outage_timeout = std::chrono::milliseconds(1);
      continue;
    }
    if (key == "compress" || key == "tls" || key == "tls-verify") {
      auto on = yes_no(spec, key, value);
      if (!on) return on.status();
      if (key == "compress" && !*on) p.remote_opts.features &= ~wire::kFeatureLz4;
      if (key == "tls") want_tls = *on;
      if (key == "tls-verify") {
        tls.verify_peer = *on;
        want_tls = true;  // like every tls-* parameter
      }
      continue;
    }
    want_tls = true;
    if (key == "tls-ca") tls.ca_file = value;
    else if (key == "tls-cert") tls.cert_file = value;
    else if (key == "tls-key") tls.key_file = value;
    else if (key == "tls-psk") tls.psk_file = value;
    else if (key == "tls-identity") tls.psk_identity = value;
    else if (key == "tls-hostname") tls.hostname = value;
  }
  if (tls.cert_file.empty() != tls.key_file.empty())
    return Status::invalid("backend '" + spec.text + "': tls-cert and tls-key go together");
  if (want_tls) p.remote.tls = tls;
  return Status::ok();
}

Result<Plan> make_plan(const BackendSpec& spec, const OpenOptions& opts) {
  Plan p;
  p.spec = spec;
  auto bad = [&](const std::string& why) { return Status::invalid("backend '" + spec.text + "': " + why); };
  if (spec.scheme == "mem") {
    MEMSYNC_TRY(check_params(spec, {}));
    if (spec.location.empty()) return bad("expected mem:SIZE, e.g. mem:1G");
    auto size = parse_size(spec.location);
    if (!size) return size.status().with_context("backend '" + spec.text + "'");
    p.mem_size = *size;
    return p;
  }
  if (spec.scheme == "file") {
    MEMSYNC_TRY(check_params(spec, {"size"}));
    if (spec.location.empty()) return bad("expected file:PATH");
    auto size = size_param(spec, "size");
    if (!size) return size.status();
    p.file = FileStoreOptions{opts.read_only, *size};
    return p;
  }
  if (spec.scheme == "dir") {
    MEMSYNC_TRY(check_params(spec, {"size", "chunk", "max-open"}));
    if (spec.location.empty()) return bad("expected dir:PATH?size=SIZE");
    p.dir.read_only = opts.read_only;
    auto size = size_param(spec, "size");
    if (!size) return size.status();
    auto chunk = size_param(spec, "chunk");
    if (!chunk) return chunk.status();
    p.dir.size = *size;
    p.dir.chunk = *chunk;
    if (p.dir.chunk && (*p.dir.chunk == 0 || *p.dir.chunk > (1ULL << 30))) return bad("chunk must be between 1 and 1G");
    if (auto it = spec.params.find("max-open"); it != spec.params.end()) {
      auto n = parse_count(it->second);
      if (!n || *n == 0 || *n > 65536) return bad("max-open must be a number of files from 1 to 65536");
      p.dir.max_open = static_cast<size_t>(*n);
    }
    return p;
  }
  if (spec.scheme == "remote") {
    auto ep = parse_endpoint(spec.location);
    if (!ep || (ep->kind != Endpoint::Kind::Unix && ep->kind != Endpoint::Kind::Tcp))
      return bad("expected remote:unix:PATH or remote:tcp:HOST:PORT (a memsync wire server, e.g. ram-ul)");
    p.remote.endpoint = *ep;
    MEMSYNC_TRY(remote_params(spec, p));
    return p;
  }
  if (spec.scheme == "redis") {
    MEMSYNC_TRY(check_params(spec, {"size", "chunk", "prefix", "db", "connections", "password-file"}));
    auto ep = parse_endpoint(spec.location);
    if (!ep || (ep->kind != Endpoint::Kind::Unix && ep->kind != Endpoint::Kind::Tcp))
      return bad("expected redis:unix:PATH?size=SIZE or redis:tcp:HOST:PORT?size=SIZE");
    p.redis = *ep;
    auto size = size_param(spec, "size");
    if (!size) return size.status();
    if (!*size) return bad("Redis records no size: give ?size=SIZE");
    p.redis_opts.size = **size;
    auto chunk = size_param(spec, "chunk");
    if (!chunk) return chunk.status();
    if (*chunk) {
      if (**chunk > (1ull << 31)) return bad("chunk is too large");
      p.redis_opts.chunk = static_cast<uint32_t>(**chunk);
    }
    if (auto it = spec.params.find("prefix"); it != spec.params.end()) p.redis_opts.prefix = it->second;
    for (const char* key : {"db", "connections"}) {
      auto it = spec.params.find(key);
      if (it == spec.params.end()) continue;
      auto n = parse_count(it->second);
      if (!n || *n > 1024) return bad(std::string(key) + " must be a small number");
      (key == std::string("db") ? p.redis_opts.db : p.redis_opts.connections) = static_cast<unsigned>(*n);
    }
    if (auto it = spec.params.find("password-file"); it != spec.params.end()) {
      // Read at plan time: a password in the spec itself would show in ps.
      std::ifstream in(it->second);
      std::string pw;
      if (!in || !std::getline(in, pw)) return bad("cannot read the password file " + it->second);
      p.redis_opts.password = pw;
    }
    p.redis_opts.read_only = opts.read_only;
    if (Status st = check_redis_options(p.redis_opts); !st) return bad(st.message());
    return p;
  }
  return Status::unsupported("backend '" + spec.text + "': the " + spec.scheme + ": backend is not part of this build yet");
}

}  // namespace

Status validate_backend_spec(std::string_view text) {
  auto spec = parse_backend_spec(text);
  if (!spec) return spec.status();
  return make_plan(*spec, {}).status();
}

Result<std::shared_ptr<Store>> open_store(std::string_view text, const OpenOptions& opts) {
  auto spec = parse_backend_spec(text);
  if (!spec) return spec.status();
  return open_store(*spec, opts);
}

Result<std::shared_ptr<Store>> open_store(const BackendSpec& spec, const OpenOptions& opts) {
  auto plan = make_plan(spec, opts);
  if (!plan) return plan.status();
  if (spec.scheme == "mem") {
    auto s = MemStore::create(plan->mem_size);
    if (!s) return s.status();
    return std::shared_ptr<Store>(std::move(s).value());
  }
  if (spec.scheme == "file") {
    auto s = FileStore::open(spec.location, plan->file);
    if (!s) {
      // Only the scheme form takes parameters: suggest ?size= only there.
      if (s.status().code() == ENOENT && spec.text.starts_with("file:") && !plan->file.create_size)
        return Status::error(ENOENT, s.status().message() + " (add ?size=SIZE to create it)");
      return s.status();
    }
    return std::shared_ptr<Store>(std::move(s).value());
  }
  if (spec.scheme == "remote") {
    auto ro = plan->remote_opts;
    ro.urgent = opts.urgent;
    auto s = wire::RemoteStore::connect(plan->remote, ro);
    if (!s) {
      // Name the server once: a refused connect already says "connect to X".
      if (s.status().message().find(plan->remote.endpoint.to_string()) != std::string::npos) return s.status();
      return s.status().with_context("connect to " + plan->remote.to_string());
    }
    return std::shared_ptr<Store>(std::move(s).value());
  }
  if (spec.scheme == "redis") {
    auto s = RedisStore::open(plan->redis, plan->redis_opts);
    if (!s) return s.status();
    return std::shared_ptr<Store>(std::move(s).value());
  }
  auto s = DirStore::open(spec.location, plan->dir);
  if (!s) return s.status();
  return std::shared_ptr<Store>(std::move(s).value());
}

}  // namespace memsync
