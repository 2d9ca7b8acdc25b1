// Hexadecimal digits, for key files and %XX escapes.
// Thread safety: pure functions.
#pragma once

namespace memsync {

// The value of one hex digit, or -1 if c is not one.
constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace memsync
