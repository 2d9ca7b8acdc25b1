// ExportConfig: what an NBD server offers, and Session: what one client
// negotiated. Shared by the handshake and transmission phases.
// Thread safety: values; a Session is owned by one connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace memsync {
class TlsServerContext;
}

namespace memsync::nbd {

enum class TlsMode {
  Off,      // STARTTLS is refused (NBD_REP_ERR_POLICY)
  On,       // clients may upgrade; plaintext clients are served too
  Require,  // every option but STARTTLS and ABORT needs TLS first (FORCEDTLS)
};

struct ExportConfig {
  std::string name;              // export name; the empty default name also selects it
  std::string description;       // NBD_INFO_DESCRIPTION, "" = none
  bool read_only = false;        // advertise NBD_FLAG_READ_ONLY, refuse writes with EPERM
  uint32_t min_block = 1;        // block size constraints (NBD_INFO_BLOCK_SIZE), bytes
  uint32_t preferred_block = 4096;
  uint32_t max_payload = 32 << 20;  // largest READ/WRITE accepted, bytes; default 32M
  TlsMode tls = TlsMode::Off;
  std::shared_ptr<const TlsServerContext> tls_context;  // required unless tls == Off
};

struct Session {
  bool structured_replies = false;  // NBD_OPT_STRUCTURED_REPLY acknowledged
  bool base_allocation = false;     // base:allocation selected by SET_META_CONTEXT
  bool tls = false;                 // STARTTLS completed
  uint16_t transmission_flags = 0;  // as sent to the client
};

}  // namespace memsync::nbd
