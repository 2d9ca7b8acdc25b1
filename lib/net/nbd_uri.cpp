#include "net/nbd_uri.hpp"

#include "util/percent.hpp"

namespace memsync {

bool is_nbd_uri(std::string_view t) {
  return t.starts_with("nbd://") || t.starts_with("nbds://") || t.starts_with("nbd+unix://") ||
         t.starts_with("nbds+unix://");
}

Result<NbdUri> parse_nbd_uri(std::string_view text) {
  auto bad = [&](const std::string& why) { return Status::invalid("NBD URI '" + std::string(text) + "': " + why); };
  NbdUri uri;
  auto sep = text.find("://");
  if (sep == std::string_view::npos || !is_nbd_uri(text)) return bad("expected nbd://, nbds://, nbd+unix:// or nbds+unix://");
  std::string_view scheme = text.substr(0, sep);
  uri.tls = scheme.starts_with("nbds");
  const bool unix_socket = scheme.ends_with("+unix");
  std::string_view rest = text.substr(sep + 3);

  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (auto h = rest.find('#'); h != std::string_view::npos) rest = rest.substr(0, h);
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view path = authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view();

  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto user = percent_decode(authority.substr(0, at));
    if (!user) return bad(user.status().message());
    uri.user = *user;
    authority = authority.substr(at + 1);
  }
  auto name = percent_decode(path);
  if (!name) return bad(name.status().message());
  uri.export_name = *name;

  for (std::string_view pair : query_items(query)) {
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq));
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!key || !value) return bad("bad %-escape in the query");
    uri.query[*key] = *value;
  }

  if (unix_socket) {
    if (!authority.empty()) return bad("a unix socket URI has no host (write nbd+unix:///EXPORT?socket=PATH)");
    auto it = uri.query.find("socket");
    if (it == uri.query.end() || it->second.empty()) return bad("missing ?socket=PATH");
    uri.endpoint.kind = Endpoint::Kind::Unix;
    uri.endpoint.path = it->second;
    uri.query.erase(it);
  } else {
    if (authority.empty()) return bad("missing host");
    std::string_view host = authority, port;
    if (authority.starts_with("[")) {
      auto close = authority.find(']');
      if (close == std::string_view::npos) return bad("unterminated [ in IPv6 address");
      host = authority.substr(1, close - 1);
      std::string_view after = authority.substr(close + 1);
      if (!after.empty() && !after.starts_with(":")) return bad("expected :PORT after ]");
      if (!after.empty()) port = after.substr(1);
    } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (host.find(':') != std::string_view::npos) return bad("write IPv6 addresses in brackets");
    }
    if (host.empty()) return bad("missing host");
    auto ep = parse_endpoint("tcp:" + (host.find(':') != std::string_view::npos ? "[" + std::string(host) + "]"
                                                                               : std::string(host)) +
                             ":" + (port.empty() ? std::string("10809") : std::string(port)));
    if (!ep) return bad(ep.status().message());
    uri.endpoint = *ep;
    if (uri.query.count("socket")) return bad("?socket= is only for nbd+unix:// URIs");
  }
  uri.endpoint.text = std::string(text);
  return uri;
}

}  // namespace memsync
