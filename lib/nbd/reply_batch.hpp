// ReplyBatch: the replies of several requests, sent with one gathered write.
//
// Header bytes are copied in; payload spans are only referenced and must
// stay valid until flush(). Each reply's parts stay together in order, and
// flush() writes the whole batch under the channel's write lock, so replies
// from different workers never interleave.
// Thread safety: one worker owns a batch.
#pragma once

#include <span>
#include <vector>

#include "net/channel.hpp"

namespace memsync::nbd {

class ReplyBatch {
 public:
  void add(std::span<const std::byte> header, std::span<const std::byte> data = {}) {
    parts_.push_back(Part{headers_.size(), header.size(), data});
    headers_.insert(headers_.end(), header.begin(), header.end());
  }
  bool empty() const { return parts_.empty(); }

  Status flush(Channel& ch) {
    if (parts_.empty()) return Status::ok();
    spans_.clear();
    for (auto& p : parts_) {
      spans_.emplace_back(headers_.data() + p.head_offset, p.head_length);
      if (!p.data.empty()) spans_.push_back(p.data);
    }
    Status st = ch.write(spans_);
    parts_.clear();
    headers_.clear();
    return st;
  }

 private:
  struct Part {
    size_t head_offset, head_length;  // into headers_, which may move as it grows
    std::span<const std::byte> data;
  };
  std::vector<std::byte> headers_;
  std::vector<Part> parts_;
  std::vector<std::span<const std::byte>> spans_;
};

}  // namespace memsync::nbd
