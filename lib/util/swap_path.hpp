// Settings for a process on the swap I/O path.
//
// When a block device is used as swap, the processes that answer its I/O
// (nbd-attach's relay or supervisor, the NBD server) must never themselves
// wait for swap or be chosen by the OOM killer while memory is short, or
// the machine deadlocks. So they lock their memory as it is touched
// (mlockall, current and future, on fault), set oom_score_adj to -1000, and mark themselves as I/O
// flushers (PR_SET_IO_FLUSHER: their allocations do not recurse into I/O).
//
// A tool that spawns a server sets kSwapPathEnv=1 in its environment;
// every memsync tool's run_main() then applies the same settings to itself
// at start. The oom score and the I/O flusher flag are inherited by
// children anyway; the memory lock is not, hence the variable.
// Thread safety: call from main before starting threads.
#pragma once

#include "util/status.hpp"

namespace memsync {

inline constexpr const char* kSwapPathEnv = "MEMSYNC_SWAP_PATH";

Status enter_swap_path();

}  // namespace memsync
