// The v1 swap header that ram-dl writes instead of running mkswap(8): judged
// against util-linux mkswap itself. mkswap formats a file with a fixed UUID
// and label; our header for the same size must equal its first page byte
// for byte (which covers every field the kernel reads: version, last_page,
// nr_badpages, the signature at the end of the page, and the zeros around
// them), for the machine's page size and for a 64K page.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernel/swap_device.hpp"
#include "util/process.hpp"

using namespace memsync;
using namespace memsync::kernel;

namespace {

// mkswap lives in /sbin, which a user's PATH may lack.
std::string find_mkswap() {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    std::string p = std::string(dir) + "/mkswap";
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

class SwapHeader : public ::testing::Test {
 protected:
  void SetUp() override {
    mkswap_ = find_mkswap();
    ASSERT_FALSE(mkswap_.empty()) << "missing mkswap: run 'make deps' (Debian package util-linux)";
    char tmpl[] = "/tmp/swap-header.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // A zero-filled file of `bytes` (mode 0600: mkswap warns about others).
  std::string zero_file(const std::string& name, uint64_t bytes) {
    std::string path = dir_ + "/" + name;
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    // Allocated, not sparse: mkswap warns about holes in a swap file.
    EXPECT_EQ(::posix_fallocate(fd, 0, static_cast<off_t>(bytes)), 0);
    ::close(fd);
    return path;
  }

  // Runs mkswap with a fixed UUID and label (and page size) on path.
  void run_mkswap(const std::string& path, const std::string& label, size_t page_size) {
    SpawnSpec s;
    s.argv = {mkswap_, "-U", kUuidText, "-L", label};
    if (page_size) {
      s.argv.push_back("-p");
      s.argv.push_back(std::to_string(page_size));
    }
    s.argv.push_back(path);
    int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    s.stdout_fd = null;
    auto pid = spawn_process(s);
    ::close(null);
    ASSERT_TRUE(pid) << pid.status().message();
    auto code = wait_exit_code(*pid);
    ASSERT_TRUE(code);
    ASSERT_EQ(*code, 0) << "mkswap " << path << " failed";
  }

  static std::vector<std::byte> read_bytes(const std::string& path, size_t n) {
    std::vector<std::byte> out(n);
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
    EXPECT_EQ(static_cast<size_t>(in.gcount()), n);
    return out;
  }

  static uint32_t u32_at(const std::vector<std::byte>& b, size_t off) {
    uint32_t v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
  }

  static SwapHeaderOptions fixed(const std::string& label, size_t page_size) {
    SwapHeaderOptions o;
    o.uuid = kUuid;
    o.label = label;
    o.page_size = page_size;
    return o;
  }

  static constexpr const char* kUuidText = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
  static constexpr std::array<uint8_t, 16> kUuid = {0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x49, 0x68,
                                                    0x87, 0x76, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0};
  std::string mkswap_;
  std::string dir_;
};

TEST_F(SwapHeader, EqualsMkswapsFirstPageByteForByte) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t bytes = 1 << 20;
  std::string path = zero_file("m.swap", bytes);
  run_mkswap(path, "ram-dl", 0);
  auto theirs = read_bytes(path, page);
  auto ours = make_swap_header(bytes, fixed("ram-dl", 0));
  ASSERT_TRUE(ours) << ours.status().message();
  ASSERT_EQ(ours->size(), page);
  EXPECT_TRUE(*ours == theirs) << "our header differs from mkswap's";
  // The fields, named, so that a difference says which one.
  EXPECT_EQ(u32_at(*ours, 1024), 1u);                      // version
  EXPECT_EQ(u32_at(*ours, 1028), bytes / page - 1);        // last_page
  EXPECT_EQ(u32_at(*ours, 1032), 0u);                      // nr_badpages
  EXPECT_EQ(u32_at(theirs, 1028), u32_at(*ours, 1028));
  EXPECT_EQ(std::memcmp(ours->data() + 1036, kUuid.data(), 16), 0);
  EXPECT_EQ(std::memcmp(theirs.data() + 1036, kUuid.data(), 16), 0);
  EXPECT_EQ(std::memcmp(ours->data() + 1052, "ram-dl\0\0\0\0\0\0\0\0\0\0", 16), 0);
  EXPECT_EQ(std::memcmp(ours->data() + page - 10, "SWAPSPACE2", 10), 0);
  EXPECT_EQ(std::memcmp(theirs.data() + page - 10, "SWAPSPACE2", 10), 0);
}

TEST_F(SwapHeader, PartialLastPageAndFullLengthLabelMatchMkswap) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t bytes = 37 * page + 1000;  // the partial page is not swap
  std::string path = zero_file("odd.swap", bytes);
  run_mkswap(path, "fifteen-bytes-x", 0);
  auto ours = make_swap_header(bytes, fixed("fifteen-bytes-x", 0));
  ASSERT_TRUE(ours);
  EXPECT_TRUE(*ours == read_bytes(path, page));
  EXPECT_EQ(u32_at(*ours, 1028), 36u);
}

TEST_F(SwapHeader, SixtyFourKPagesMatchMkswap) {
  const uint64_t bytes = 4 << 20;
  std::string path = zero_file("big-page.swap", bytes);
  run_mkswap(path, "", 65536);
  auto ours = make_swap_header(bytes, fixed("", 65536));
  ASSERT_TRUE(ours);
  ASSERT_EQ(ours->size(), 65536u);
  EXPECT_TRUE(*ours == read_bytes(path, 65536));
  EXPECT_EQ(u32_at(*ours, 1028), 63u);
  EXPECT_EQ(std::memcmp(ours->data() + 65536 - 10, "SWAPSPACE2", 10), 0);
}

TEST_F(SwapHeader, WriteSwapHeaderLeavesTheFileAsMkswapWould) {
  const uint64_t bytes = 2 << 20;
  std::string a = zero_file("a.swap", bytes), b = zero_file("b.swap", bytes);
  run_mkswap(a, "x", 0);
  auto written = write_swap_header(b, fixed("x", 0));
  ASSERT_TRUE(written) << written.status().message();
  EXPECT_EQ(*written, bytes);
  EXPECT_TRUE(read_bytes(a, bytes) == read_bytes(b, bytes)) << "the files differ beyond the header page";
}

TEST_F(SwapHeader, RandomUuidsAreVersion4AndDiffer) {
  auto one = make_swap_header(1 << 20, {});
  auto two = make_swap_header(1 << 20, {});
  ASSERT_TRUE(one && two);
  EXPECT_NE(std::memcmp(one->data() + 1036, two->data() + 1036, 16), 0);
  EXPECT_EQ(std::to_integer<int>((*one)[1036 + 6]) & 0xF0, 0x40);  // version 4
  EXPECT_EQ(std::to_integer<int>((*one)[1036 + 8]) & 0xC0, 0x80);  // RFC 4122 variant
}

TEST(SwapHeaderErrors, RefusesTinyAreasLongLabelsAndOddPageSizes) {
  auto tiny = make_swap_header(9 * 4096, SwapHeaderOptions{{}, "", 4096});
  ASSERT_FALSE(tiny);
  EXPECT_EQ(tiny.status().code(), EINVAL);
  EXPECT_NE(tiny.status().message().find("at least 10 pages (40 KiB)"), std::string::npos)
      << tiny.status().message();
  EXPECT_TRUE(make_swap_header(10 * 4096, SwapHeaderOptions{{}, "", 4096}));
  auto label = make_swap_header(1 << 20, SwapHeaderOptions{{}, "sixteen-bytes-xx", 4096});
  ASSERT_FALSE(label);
  EXPECT_NE(label.status().message().find("longer than 15 bytes"), std::string::npos);
  EXPECT_FALSE(make_swap_header(1 << 20, SwapHeaderOptions{{}, "", 2048}));
  EXPECT_FALSE(make_swap_header(1 << 20, SwapHeaderOptions{{}, "", 12288}));
  auto missing = write_swap_header("/nonexistent/swap", {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.status().code(), ENOENT);
}

TEST(SwapOn, PriorityOutsideSwaponsRangeIsRefusedBeforeTheCall) {
  Status st = swap_on("/nonexistent/swap", 32768);
  EXPECT_EQ(st.code(), EINVAL);
  EXPECT_NE(st.message().find("outside -1..32767"), std::string::npos) << st.message();
  EXPECT_EQ(swap_on("/nonexistent/swap", -2).code(), EINVAL);
}

TEST(SwapArea, AnInactivePathIsNotFound) {
  auto a = find_swap_area("/nonexistent/swap");
  ASSERT_TRUE(a) << a.status().message();
  EXPECT_FALSE(a->has_value());
}

}  // namespace
