// MemStore (`mem:SIZE`): a store in this process's anonymous memory.
//
// Volatile: the data dies with the process. Pages cost memory only once
// written; trim and write_zeroes give whole pages back to the kernel.
// sync() is a no-op (nothing more durable exists). Multi-conn safe.
// Thread safety: as Store; concurrent overlapping writes may tear.
#pragma once

#include "backend/store.hpp"
#include "util/mapping.hpp"

namespace memsync {

class MemStore final : public Store {
 public:
  static Result<std::shared_ptr<MemStore>> create(uint64_t size);

  uint64_t size() const override { return mem_.bytes().size(); }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  Status sync() override { return Status::ok(); }
  bool can_multi_conn() const override { return true; }
  bool is_volatile() const override { return true; }
  bool can_trim() const override { return true; }
  Status trim(uint64_t offset, uint64_t length) override { return write_zeroes(offset, length, true); }
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  bool can_fast_zero() const override { return true; }
  std::string describe() const override;
  bool direct_range(uint64_t offset, uint64_t length, Access, DirectRange& out) override {
    if (!in_range(offset, length)) return false;
    out.memory = mem_.bytes().data() + offset;
    return true;
  }

  // The memory itself, for frontends that can serve from it directly.
  std::span<std::byte> bytes() const { return mem_.bytes(); }

 private:
  explicit MemStore(Mapping m) : mem_(std::move(m)) {}
  bool in_range(uint64_t offset, uint64_t length) const {
    return offset <= size() && length <= size() - offset;
  }
  Mapping mem_;
};

}  // namespace memsync
