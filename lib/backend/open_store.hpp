// open_store: from a backend spec (see spec.hpp) to a live Store.
//
//   mem:SIZE                        MemStore of SIZE bytes
//   file:PATH[?size=SIZE]  or PATH  FileStore; size= creates a missing file
//   dir:PATH?size=SIZE[&chunk=SIZE][&max-open=N]   DirStore (max-open: a count)
//
// Unknown parameters are errors that list the accepted ones. Reserved
// schemes that this build lacks fail with ENOTSUP and say so.
// Thread safety: none needed; call from one thread.
#pragma once

#include <memory>
#include <string_view>

#include "backend/spec.hpp"
#include "backend/store.hpp"

namespace memsync {

struct OpenOptions {
  bool read_only = false;  // open files read-only; writes fail with EPERM
  bool urgent = false;     // remote: every request is URGENT (a managed mount's read connection)
};

Result<std::shared_ptr<Store>> open_store(const BackendSpec& spec, const OpenOptions& opts = {});

// Checks a spec (grammar, scheme, parameters and their values) without
// creating or opening anything: tools call it while validating options, so
// a bad spec is a usage error.
Status validate_backend_spec(std::string_view text);
Result<std::shared_ptr<Store>> open_store(std::string_view text, const OpenOptions& opts = {});

}  // namespace memsync
