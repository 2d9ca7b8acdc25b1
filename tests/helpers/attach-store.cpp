// attach-store: a test helper (not a tool) for the in-process attach library
// call (kernel::StoreAttachment) that ram-dl, `seeder --attach` and tapisk
// build on, driven against the real kernel in the VM:
//
//   attach-store [--swap] [--connections N] BACKEND
//
// Opens BACKEND, attaches it with the server on threads of this process,
// prints the device, and on SIGTERM/SIGINT detaches, syncs, and exits 0.
// --swap applies the swap-path settings first (memory locked, OOM-proof).
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <string>

#include "backend/open_store.hpp"
#include "kernel/store_attachment.hpp"
#include "util/signals.hpp"
#include "util/stop_hook.hpp"
#include "util/swap_path.hpp"

using namespace memsync;

static int die(const std::string& what, const Status& st) {
  std::fprintf(stderr, "attach-store: %s: %s\n", what.c_str(), st.message().c_str());
  return 1;
}

int main(int argc, char** argv) {
  bool swap = false;
  unsigned connections = 1;
  std::string backend;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--swap") swap = true;
    else if (a == "--connections" && i + 1 < argc) connections = static_cast<unsigned>(std::stoul(argv[++i]));
    else backend = a;
  }
  if (backend.empty()) {
    std::fprintf(stderr, "usage: attach-store [--swap] [--connections N] BACKEND\n");
    return 2;
  }
  if (swap) {
    Status st = enter_swap_path();
    if (!st) return die("swap path", st);
  }
  StopHook stop;
  SignalWatcher signals({SIGINT, SIGTERM}, [&](int) { stop.request(); });
  auto store = open_store(backend, OpenOptions{});
  if (!store) return die("open " + backend, store.status());
  kernel::StoreAttachOptions o;
  o.connections = connections;
  o.attach.backend_identifier = "memsync-test:" + backend;
  auto a = kernel::StoreAttachment::attach(*store, o);
  if (!a) return die("attach", a.status());
  std::printf("%s\n", (*a)->device().path().c_str());
  std::fflush(stdout);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  stop.set_target([&] {
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done; });
  Status st = (*a)->detach();
  if (!st) return die("detach", st);
  return 0;
}
