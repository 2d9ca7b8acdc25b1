// open_managed_store: a managed mount (ManagedStore) from two backend specs,
// as `nbd-serve --cache CACHE REMOTE` takes them.
//
// A remote: REMOTE is opened twice, one connection for the background
// transfer and one for urgent reads, so a read never queues behind pulled
// megabytes. A file CACHE that does not exist is created with the remote's
// size (file:PATH without ?size=, or a plain path).
//
// Thread safety: call from one thread.
#pragma once

#include <memory>
#include <string_view>

#include "backend/open_store.hpp"
#include "managed/managed_store.hpp"

namespace memsync {

Result<std::shared_ptr<ManagedStore>> open_managed_store(std::string_view remote_spec, std::string_view cache_spec,
                                                         const ManagedOptions& o, const OpenOptions& opts = {});

}  // namespace memsync
