#include "kernel/nbd_device.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <thread>

namespace memsync::kernel {
namespace {

std::string sys_dir(uint32_t index) { return "/sys/block/nbd" + std::to_string(index); }

std::optional<std::string> read_line(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  return line;
}

std::optional<uint64_t> read_number(const std::string& path) {
  auto line = read_line(path);
  if (!line) return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(line->data(), line->data() + line->size(), v);
  if (ec != std::errc()) return std::nullopt;
  return v;
}

}  // namespace

std::string device_path(uint32_t index) { return "/dev/nbd" + std::to_string(index); }

Result<uint32_t> parse_device(const std::string& text) {
  std::string_view s = text;
  if (s.starts_with("/dev/")) s.remove_prefix(5);
  if (s.starts_with("nbd")) s.remove_prefix(3);
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    return Status::invalid("'" + text + "' is not an NBD device (expected /dev/nbdN)");
  return v;
}

bool nbd_module_loaded() { return std::filesystem::exists("/sys/module/nbd") || std::filesystem::exists("/sys/block/nbd0"); }

Result<DeviceInfo> read_device_info(uint32_t index) {
  std::string dir = sys_dir(index);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec))
    return Status::error(ENODEV, device_path(index) + " does not exist" +
                                     (nbd_module_loaded() ? "" : " (is the nbd module loaded? modprobe nbd)"));
  DeviceInfo d;
  d.index = index;
  if (auto pid = read_number(dir + "/pid")) {
    d.connected = true;
    d.pid = static_cast<pid_t>(*pid);
  }
  d.size_bytes = read_number(dir + "/size").value_or(0) * 512;
  d.backend = read_line(dir + "/backend").value_or("");
  return d;
}

Result<std::vector<DeviceInfo>> list_devices() {
  std::vector<uint32_t> indexes;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string name = e.path().filename();
    if (!name.starts_with("nbd")) continue;
    if (auto i = parse_device(name)) indexes.push_back(*i);
  }
  if (ec) return Status::from_errno("list /sys/block", ec.value());
  std::sort(indexes.begin(), indexes.end());
  std::vector<DeviceInfo> out;
  for (uint32_t i : indexes) {
    auto d = read_device_info(i);
    if (d) out.push_back(*d);
  }
  return out;
}

Result<uint32_t> find_free_device() {
  auto all = list_devices();
  if (!all) return all.status();
  if (all->empty())
    return Status::error(ENOENT, "there are no NBD devices: is the nbd module loaded? (modprobe nbd)");
  for (auto& d : *all)
    if (!d.connected && d.size_bytes == 0) return d.index;
  return Status::error(EBUSY, "every NBD device is in use (load the module with more: modprobe nbd nbds_max=N)");
}

Status wait_until_ready(uint32_t index, uint64_t size_bytes, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  // The capacity in sysfs is set once the kernel has started the device
  // (its receive workers run); opening the node to ask would also make the
  // kernel scan for partitions, I/O that belongs to the first real user.
  std::string path = device_path(index);
  std::string size_file = sys_dir(index) + "/size";
  for (;;) {
    uint64_t bytes = read_number(size_file).value_or(0) * 512;
    if (bytes == size_bytes && ::access(path.c_str(), F_OK) == 0) return Status::ok();
    if (std::chrono::steady_clock::now() >= deadline)
      return Status::error(ETIMEDOUT, path + " did not become ready (size " + std::to_string(bytes) +
                                          ", expected " + std::to_string(size_bytes) + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Result<uint64_t> limit_request_size(uint32_t index, uint64_t max_bytes) {
  std::string q = sys_dir(index) + "/queue/";
  uint64_t kb = max_bytes / 1024;
  if (auto hw = read_number(q + "max_hw_sectors_kb")) kb = std::min(kb, *hw);
  std::ofstream out(q + "max_sectors_kb");
  out << kb << '\n';
  out.flush();
  if (!out) return Status::from_errno("set " + q + "max_sectors_kb to " + std::to_string(kb));
  auto now = read_number(q + "max_sectors_kb");
  if (!now) return Status::io("read back " + q + "max_sectors_kb");
  return *now * 1024;
}

}  // namespace memsync::kernel
