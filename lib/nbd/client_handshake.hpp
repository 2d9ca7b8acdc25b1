// The client side of the NBD fixed-newstyle handshake, for clients that
// hand the socket to the kernel afterwards (nbd-attach) or speak simple
// replies themselves.
//
// With a TLS client context, NBD_OPT_STARTTLS comes first and everything
// after it runs over TLS: the channel is upgraded to the relay's plaintext
// end (Channel::upgrade), which the caller then owns with the channel.
//
// Sends the client flags, then NBD_OPT_GO for the export asking for
// NBD_INFO_BLOCK_SIZE; a server that does not know GO (NBD_REP_ERR_UNSUP)
// gets NBD_OPT_EXPORT_NAME instead. Never negotiates structured replies or
// metadata contexts: the kernel reads only simple replies.
//
// Errors: EPROTO for a server that breaks the protocol, ENOENT/EACCES/
// EINVAL... with the server's own message for a refused export, the
// channel's error when the connection drops. Every length from the server
// is checked before anything is allocated.
// Thread safety: one thread owns the channel during the handshake.
#pragma once

#include <cstdint>
#include <string>

#include "net/channel.hpp"
#include "net/tls.hpp"
#include "util/status.hpp"

namespace memsync::nbd {

struct ExportInfo {
  uint64_t size = 0;
  uint16_t transmission_flags = 0;
  uint32_t min_block = 1;         // from NBD_INFO_BLOCK_SIZE, or the defaults
  uint32_t preferred_block = 4096;
  uint32_t max_payload = 32 << 20;
  bool block_size_known = false;  // the server sent NBD_INFO_BLOCK_SIZE
  bool used_export_name = false;  // fell back to NBD_OPT_EXPORT_NAME
};

Result<ExportInfo> client_handshake(Channel& ch, const std::string& export_name,
                                    const TlsClientContext* tls = nullptr);

}  // namespace memsync::nbd
