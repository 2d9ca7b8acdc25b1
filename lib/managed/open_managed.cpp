#include "managed/open_managed.hpp"

#include <sys/stat.h>
#include <unistd.h>

namespace memsync {

Result<std::shared_ptr<ManagedStore>> open_managed_store(std::string_view remote_spec, std::string_view cache_spec,
                                                         const ManagedOptions& o, const OpenOptions& opts) {
  auto rspec = parse_backend_spec(remote_spec);
  if (!rspec) return rspec.status();
  auto remote = open_store(*rspec, opts);
  if (!remote) return remote.status().with_context("open the remote store");
  std::shared_ptr<Store> urgent = *remote;
  if (rspec->scheme == "remote") {
    OpenOptions urgent_opts = opts;
    urgent_opts.urgent = true;
    auto second = open_store(*rspec, urgent_opts);
    if (!second) return second.status().with_context("open the urgent connection");
    urgent = *second;
  }
  auto cspec = parse_backend_spec(cache_spec);
  if (!cspec) return cspec.status();
  struct stat st;
  const bool created = cspec->scheme == "file" && ::stat(cspec->location.c_str(), &st) != 0 && errno == ENOENT;
  if (created && !cspec->params.count("size")) cspec->params["size"] = std::to_string((*remote)->size());
  auto cache = open_store(*cspec, OpenOptions{});
  if (!cache) return cache.status().with_context("open the cache");
  auto m = ManagedStore::open(*remote, urgent, *cache, o);
  if (!m && created) ::unlink(cspec->location.c_str());  // refused: leave nothing behind
  return m;
}

}  // namespace memsync
