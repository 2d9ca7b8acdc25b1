// The Store contract, checked the same way on every backend.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "backend/dir_store.hpp"
#include "backend/file_store.hpp"
#include "backend/mem_store.hpp"
#include "backend/open_store.hpp"

using namespace memsync;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  auto d = fs::temp_directory_path() / ("memsync-unit-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d / name;
}

std::vector<std::byte> pattern(size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

bool all_zero(std::span<const std::byte> s) {
  for (auto b : s)
    if (b != std::byte{0}) return false;
  return true;
}

class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string kind = GetParam();
    if (kind == "mem") store_ = *open_store("mem:4M");
    else if (kind == "file") store_ = *open_store("file:" + scratch("f.img").string() + "?size=4M");
    else store_ = *open_store("dir:" + scratch("d").string() + "?size=4M&chunk=64K&max-open=4");
  }
  void TearDown() override { fs::remove_all(scratch("").parent_path()); }
  std::shared_ptr<Store> store_;
};

TEST_P(StoreContract, FreshStoreReadsZeros) {
  std::vector<std::byte> buf(store_->size(), std::byte{1});
  ASSERT_TRUE(store_->read_at(buf, 0));
  EXPECT_TRUE(all_zero(buf));
}

TEST_P(StoreContract, WriteThenReadAnyAlignment) {
  auto data = pattern(200000, 1);
  for (uint64_t off : {0ull, 1ull, 65535ull, 4ull * 1024 * 1024 - 200000}) {
    ASSERT_TRUE(store_->write_at(data, off));
    std::vector<std::byte> back(data.size());
    ASSERT_TRUE(store_->read_at(back, off));
    EXPECT_EQ(back, data) << "at offset " << off;
  }
  EXPECT_TRUE(store_->sync());
}

TEST_P(StoreContract, ZeroesAndTrim) {
  auto data = pattern(300000, 2);
  ASSERT_TRUE(store_->write_at(data, 1000));
  ASSERT_TRUE(store_->write_zeroes(5000, 200000, true));
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(store_->read_at(back, 1000));
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 4000, data.begin()));
  EXPECT_TRUE(all_zero(std::span(back).subspan(4000, 200000)));
  EXPECT_TRUE(std::equal(back.begin() + 204000, back.end(), data.begin() + 204000));
  if (store_->can_trim()) {
    EXPECT_TRUE(store_->trim(0, store_->size()));
  }
}

TEST_P(StoreContract, ConcurrentWritersAtDifferentOffsets) {
  constexpr int kThreads = 8;
  constexpr size_t kPiece = 4 * 1024 * 1024 / kThreads;
  {
    std::vector<std::jthread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        auto d = pattern(kPiece, static_cast<unsigned>(t));
        for (int rep = 0; rep < 4; ++rep) ASSERT_TRUE(store_->write_at(d, t * kPiece));
      });
  }
  for (int t = 0; t < kThreads; ++t) {
    std::vector<std::byte> back(kPiece);
    ASSERT_TRUE(store_->read_at(back, t * kPiece));
    EXPECT_EQ(back, pattern(kPiece, static_cast<unsigned>(t)));
  }
}

TEST_P(StoreContract, ExtentsCoverTheRange) {
  ASSERT_TRUE(store_->write_at(pattern(4096, 3), 128 * 1024));
  std::vector<Extent> ext;
  ASSERT_TRUE(store_->extents(0, store_->size(), ext));
  uint64_t total = 0;
  for (auto& e : ext) total += e.length;
  EXPECT_LE(total, store_->size());
  EXPECT_GT(total, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContract, ::testing::Values("mem", "file", "dir"));

TEST(FileStore, HolesAreReported) {
  auto path = scratch("holes.img");
  auto s = *FileStore::open(path.string(), FileStoreOptions{false, 8ull << 20});
  ASSERT_TRUE(s->write_at(pattern(1 << 20, 4), 4 << 20));
  std::vector<Extent> ext;
  ASSERT_TRUE(s->extents(0, 8 << 20, ext));
  ASSERT_FALSE(ext.empty());
  EXPECT_TRUE(ext.front().hole && ext.front().zero);  // the first 4M were never written
  bool saw_data = false;
  for (auto& e : ext) saw_data = saw_data || !e.hole;
  EXPECT_TRUE(saw_data);
  fs::remove_all(path.parent_path());
}

TEST(FileStore, ReadOnlyRefusesWrites) {
  auto path = scratch("ro.img");
  { auto s = *FileStore::open(path.string(), FileStoreOptions{false, 4096}); }
  auto ro = *FileStore::open(path.string(), FileStoreOptions{true, std::nullopt});
  EXPECT_TRUE(ro->is_read_only());
  EXPECT_EQ(ro->write_at(pattern(10, 1), 0).code(), EPERM);
  fs::remove_all(path.parent_path());
}

TEST(FileStore, SizeMismatchIsAnError) {
  auto path = scratch("sz.img");
  { auto s = *FileStore::open(path.string(), FileStoreOptions{false, 4096}); }
  auto again = FileStore::open(path.string(), FileStoreOptions{false, 8192});
  ASSERT_FALSE(again);
  EXPECT_NE(again.status().message().find("exists with size 4096"), std::string::npos);
  fs::remove_all(path.parent_path());
}

TEST(DirStore, MissingChunksAreHolesAndOpenFilesAreBounded) {
  auto path = scratch("dirstore");
  DirStoreOptions o;
  o.size = 1 << 20;
  o.chunk = 4096;
  o.max_open = 3;
  auto s = *DirStore::open(path.string(), o);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(s->write_at(pattern(4096, i), static_cast<uint64_t>(i) * 8192));
  EXPECT_LE(s->open_files(), 3u);
  EXPECT_TRUE(s->sync());
  std::vector<Extent> ext;
  ASSERT_TRUE(s->extents(0, 16384, ext));
  ASSERT_EQ(ext.size(), 4u);  // data, hole, data, hole (chunks 0..3)
  EXPECT_FALSE(ext[0].hole);
  EXPECT_TRUE(ext[1].hole && ext[1].zero);
  // Trimming a whole chunk removes its file.
  ASSERT_TRUE(s->trim(0, 4096));
  EXPECT_FALSE(fs::exists(path / "0000000000000000"));
  fs::remove_all(path.parent_path());
}

TEST(DirStore, GeometryIsRecordedAndChecked) {
  auto path = scratch("geo");
  DirStoreOptions o;
  o.size = 1 << 20;
  o.chunk = 8192;
  { auto s = *DirStore::open(path.string(), o); }
  DirStoreOptions none;
  auto reopened = DirStore::open(path.string(), none);
  ASSERT_TRUE(reopened);
  EXPECT_EQ((*reopened)->size(), 1u << 20);
  EXPECT_EQ((*reopened)->chunk_size(), 8192u);
  DirStoreOptions wrong;
  wrong.size = 2 << 20;
  auto bad = DirStore::open(path.string(), wrong);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("was created with size="), std::string::npos);
  fs::remove_all(path.parent_path());
}

TEST(MemStore, TrimGivesPagesBack) {
  auto s = *MemStore::create(64 << 20);
  ASSERT_TRUE(s->write_at(pattern(1 << 20, 5), 0));
  ASSERT_TRUE(s->trim(0, 1 << 20));
  std::vector<std::byte> back(1 << 20);
  ASSERT_TRUE(s->read_at(back, 0));
  EXPECT_TRUE(all_zero(back));
  EXPECT_FALSE(s->read_at(back, (64 << 20) - 10));  // out of range is refused, not a crash
}

}  // namespace
