// The server side of the NBD fixed-newstyle handshake.
//
// Sends the greeting, reads the client flags, then answers options until
// the client enters transmission (EXPORT_NAME or GO), aborts, or breaks the
// protocol. Options: EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO (with
// NBD_INFO_EXPORT, NAME, DESCRIPTION, BLOCK_SIZE), STRUCTURED_REPLY,
// LIST_META_CONTEXT and SET_META_CONTEXT (base:allocation). Every other
// option is answered with NBD_REP_ERR_UNSUP after its data is skipped, so
// the stream stays in sync. Option data is capped at 64 KiB (larger is
// skipped and answered NBD_REP_ERR_TOO_BIG) before anything is allocated.
//
// Returns the negotiated Session when transmission should start. A client
// that aborts or disconnects returns Status::closed; a protocol violation
// returns EPROTO. The channel may have been upgraded to TLS either way.
// Thread safety: one thread owns the channel during the handshake.
#pragma once

#include "backend/store.hpp"
#include "nbd/export_config.hpp"
#include "net/channel.hpp"

namespace memsync::nbd {

Result<Session> server_handshake(Channel& ch, const ExportConfig& cfg, const Store& store);

// The transmission flags offered for this store and configuration.
uint16_t transmission_flags(const ExportConfig& cfg, const Store& store, bool structured);

inline constexpr uint32_t kMaxOptionLength = 64 * 1024;

}  // namespace memsync::nbd
