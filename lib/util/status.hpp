// Status and Result<T>: the one error type of memsync.
//
// A Status is either ok or carries an errno-style code (positive, from
// <cerrno>) and a human-readable message. The code is what programs act on;
// the message is for people. Kinds are derived from the code and named for
// what the caller should do next:
//   is_retry()        try the same call again (EINTR, EAGAIN)
//   is_reconnect()    the peer or transport is gone; reconnect and resume
//   is_unsupported()  the operation is not offered; fall back or report
//   anything else     give up on this request and report it
//
// Result<T> holds a T or a failed Status. Reading value() of a failed Result
// is a programming error: it prints the status and aborts (never UB).
//
// Thread safety: values; no shared state. Safe to copy between threads.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace memsync {

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok

  static Status ok() { return Status(); }
  // REQUIRES: code > 0.
  static Status error(int code, std::string message) { return Status(code, std::move(message)); }
  static Status invalid(std::string message) { return Status(EINVAL, std::move(message)); }
  static Status io(std::string message) { return Status(EIO, std::move(message)); }
  static Status unsupported(std::string message) { return Status(EOPNOTSUPP, std::move(message)); }
  static Status closed(std::string message) { return Status(ECONNRESET, std::move(message)); }
  // From errno (or an explicit errno value) with "what: strerror" as message.
  static Status from_errno(const std::string& what, int err = errno);

  bool is_ok() const { return code_ == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return code_; }
  const std::string& message() const { return message_; }

  bool is_retry() const { return code_ == EINTR || code_ == EAGAIN; }
  bool is_reconnect() const;
  bool is_unsupported() const { return code_ == EOPNOTSUPP || code_ == ENOTSUP; }

  // "message" for errors, "ok" for ok.
  std::string to_string() const { return is_ok() ? "ok" : message_; }
  // Returns a copy whose message is "context: message".
  Status with_context(const std::string& context) const;

  // Explicitly discard an error the caller has decided not to act on.
  void ignore() const {}

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.is_ok()) status_ = Status::error(EINVAL, "Result built from an ok Status");
  }

  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: is_ok(). Aborts with the status otherwise.
  T& value() & { check(); return *value_; }
  const T& value() const& { check(); return *value_; }
  T&& value() && { check(); return std::move(*value_); }
  T* operator->() { check(); return &*value_; }
  T& operator*() & { check(); return *value_; }
  const T& operator*() const& { check(); return *value_; }
  T&& operator*() && { check(); return std::move(*value_); }

 private:
  void check() const {
    if (!value_) {
      std::fprintf(stderr, "fatal: value() of a failed Result: %s\n", status_.message().c_str());
      std::abort();
    }
  }
  std::optional<T> value_;
  Status status_;
};

}  // namespace memsync

// Propagate a failed Status from an expression returning Status.
#define MEMSYNC_TRY(expr)                       \
  do {                                          \
    ::memsync::Status memsync_try_st_ = (expr); \
    if (!memsync_try_st_.is_ok()) return memsync_try_st_; \
  } while (0)
