#include "backend/open_store.hpp"

#include "backend/dir_store.hpp"
#include "backend/file_store.hpp"
#include "backend/mem_store.hpp"
#include "util/units.hpp"

namespace memsync {
namespace {

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

}  // namespace

Result<std::shared_ptr<Store>> open_store(std::string_view text, const OpenOptions& opts) {
  auto spec = parse_backend_spec(text);
  if (!spec) return spec.status();
  return open_store(*spec, opts);
}

Result<std::shared_ptr<Store>> open_store(const BackendSpec& spec, const OpenOptions& opts) {
  if (spec.scheme == "mem") {
    MEMSYNC_TRY(check_params(spec, {}));
    if (spec.location.empty()) return Status::invalid("backend '" + spec.text + "': expected mem:SIZE, e.g. mem:1G");
    auto size = parse_size(spec.location);
    if (!size) return size.status().with_context("backend '" + spec.text + "'");
    auto s = MemStore::create(*size);
    if (!s) return s.status();
    return std::shared_ptr<Store>(std::move(s).value());
  }
  if (spec.scheme == "file") {
    MEMSYNC_TRY(check_params(spec, {"size"}));
    if (spec.location.empty()) return Status::invalid("backend '" + spec.text + "': expected file:PATH");
    auto size = size_param(spec, "size");
    if (!size) return size.status();
    auto s = FileStore::open(spec.location, FileStoreOptions{opts.read_only, *size});
    if (!s) return s.status();
    return std::shared_ptr<Store>(std::move(s).value());
  }
  if (spec.scheme == "dir") {
    MEMSYNC_TRY(check_params(spec, {"size", "chunk", "max-open"}));
    if (spec.location.empty()) return Status::invalid("backend '" + spec.text + "': expected dir:PATH?size=SIZE");
    DirStoreOptions d;
    d.read_only = opts.read_only;
    auto size = size_param(spec, "size");
    if (!size) return size.status();
    auto chunk = size_param(spec, "chunk");
    if (!chunk) return chunk.status();
    auto max_open = size_param(spec, "max-open");
    if (!max_open) return max_open.status();
    d.size = *size;
    d.chunk = *chunk;
    if (*max_open) d.max_open = static_cast<size_t>(**max_open);
    auto s = DirStore::open(spec.location, d);
    if (!s) return s.status();
    return std::shared_ptr<Store>(std::move(s).value());
  }
  return Status::unsupported("backend '" + spec.text + "': the " + spec.scheme + ": backend is not part of this build yet");
}

}  // namespace memsync
