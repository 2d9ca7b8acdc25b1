#include "backend/spec.hpp"

#include <array>

#include "util/percent.hpp"

namespace memsync {
namespace {

constexpr std::array<std::string_view, 8> kSchemes = {"mem", "file", "dir", "remote", "redis", "tape", "nbd", "nbds"};

}  // namespace

bool is_known_scheme(std::string_view scheme) {
  for (auto s : kSchemes)
    if (s == scheme) return true;
  return false;
}

Result<BackendSpec> parse_backend_spec(std::string_view text) {
  BackendSpec spec;
  spec.text = std::string(text);
  if (text.empty()) return Status::invalid("empty backend (expected mem:SIZE, file:PATH, dir:PATH or a path)");
  auto colon = text.find(':');
  std::string_view scheme = colon == std::string_view::npos ? std::string_view() : text.substr(0, colon);
  if (!is_known_scheme(scheme)) {
    spec.scheme = "file";
    spec.location = std::string(text);
    return spec;
  }
  spec.scheme = std::string(scheme);
  std::string_view rest = text.substr(colon + 1);
  auto q = rest.find('?');
  spec.location = std::string(rest.substr(0, q));
  if (q != std::string_view::npos) {
    for (std::string_view pair : query_items(rest.substr(q + 1))) {
      auto eq = pair.find('=');
      if (eq == std::string_view::npos || eq == 0)
        return Status::invalid("backend '" + std::string(text) + "': parameter '" + std::string(pair) + "' is not KEY=VALUE");
      std::string key(pair.substr(0, eq));
      auto value = percent_decode(pair.substr(eq + 1));
      if (!value) return value.status().with_context("backend '" + std::string(text) + "'");
      if (spec.params.count(key))
        return Status::invalid("backend '" + std::string(text) + "': parameter '" + key + "' is given twice");
      spec.params[key] = std::move(value).value();
    }
  }
  return spec;
}

}  // namespace memsync
