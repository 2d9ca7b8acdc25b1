#include "util/status.hpp"

#include <cstring>

namespace memsync {

Status Status::from_errno(const std::string& what, int err) {
  if (err <= 0) err = EIO;
  return Status(err, what + ": " + std::strerror(err));
}

bool Status::is_reconnect() const {
  switch (code_) {
    case ECONNRESET: case EPIPE: case ENOTCONN: case ECONNREFUSED:
    case ETIMEDOUT: case ESHUTDOWN: case ECONNABORTED: case EHOSTUNREACH:
    case ENETUNREACH: case ENETDOWN:
      return true;
    default:
      return false;
  }
}

Status Status::with_context(const std::string& context) const {
  if (is_ok()) return *this;
  return Status(code_, context + ": " + message_);
}

}  // namespace memsync
