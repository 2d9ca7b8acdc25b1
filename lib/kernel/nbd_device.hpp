// NBD devices as the kernel shows them in sysfs and /dev: naming, state,
// readiness and queue limits. Everything here reads or writes files under
// /sys/block/nbdN, which exist once the nbd module is loaded, whether the
// device was attached through netlink or ioctl.
//
// Thread safety: plain functions without shared state.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/status.hpp"

namespace memsync::kernel {

// "/dev/nbdN".
std::string device_path(uint32_t index);
// Accepts "/dev/nbdN", "nbdN" or "N".
Result<uint32_t> parse_device(const std::string& text);

struct DeviceInfo {
  uint32_t index = 0;
  bool connected = false;        // a process (or the kernel via netlink) holds it
  uint64_t size_bytes = 0;
  std::optional<pid_t> pid;      // the task that connected it
  std::string backend;           // the backend identifier given at connect, if any
};

// True when the nbd module is loaded (its devices exist in sysfs).
bool nbd_module_loaded();
Result<DeviceInfo> read_device_info(uint32_t index);
// Every nbd device, in index order.
Result<std::vector<DeviceInfo>> list_devices();
// The lowest-numbered device that no one has connected (for ioctl attach,
// where the caller must name the device).
Result<uint32_t> find_free_device();

// Waits until the kernel shows the device with size_bytes (sysfs) and its
// node exists, so the path printed to a script is usable at once.
Status wait_until_ready(uint32_t index, uint64_t size_bytes, std::chrono::milliseconds limit);

// Caps the size of one request the kernel sends (queue/max_sectors_kb) at
// max_bytes (rounded down to KiB, at most the hardware limit). Returns the
// value now in effect, in bytes.
Result<uint64_t> limit_request_size(uint32_t index, uint64_t max_bytes);

}  // namespace memsync::kernel
