#include "util/swap_path.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <fstream>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace memsync {

Status enter_swap_path() {
  // MCL_ONFAULT: lock pages as they are touched, not whole mappings at
  // once (a mem: store's reservation, idle thread stacks), so locking costs
  // what is used. Kernels before 4.4 lack it: lock everything instead.
  if (::mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0 &&
      (errno != EINVAL || ::mlockall(MCL_CURRENT | MCL_FUTURE) < 0))
    return Status::from_errno("lock memory for swap (mlockall; needs root or a large RLIMIT_MEMLOCK)");
  {
    std::ofstream oom("/proc/self/oom_score_adj");
    oom << "-1000\n";
    oom.flush();
    if (!oom) return Status::from_errno("set oom_score_adj to -1000");
  }
  if (::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
    return Status::from_errno("mark the process as an I/O flusher (PR_SET_IO_FLUSHER, Linux 5.6+)");
  return Status::ok();
}

}  // namespace memsync
