//! Turning a response [`Message`] into bytes that fit the transport.

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The classic UDP limit, used when the client advertised no EDNS size.
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// Encodes `message` into at most `limit` bytes. Records that do not fit are left out and TC is
/// set (hickory's encoder rolls back the record that overflowed). Falls back to a header-only
/// SERVFAIL if even that cannot be encoded.
pub fn encode(message: &Message, limit: u16) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(usize::from(limit).min(1232));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(limit);
    match message.emit(&mut encoder) {
        Ok(()) => buffer,
        Err(error) => {
            tracing::debug!(%error, id = message.metadata.id, "encoding response failed");
            header_only(message.metadata, ResponseCode::ServFail)
        }
    }
}

/// A response carrying only a header: the request's id, opcode and RD, and `rcode`.
pub fn header_only(request: Metadata, rcode: ResponseCode) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(&request);
    metadata.response_code = rcode;
    metadata.recursion_available = true;
    let mut message = Message::response(request.id, request.op_code);
    message.metadata = metadata;
    let mut buffer = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut buffer);
    match message.emit(&mut encoder) {
        Ok(()) => buffer,
        Err(_) => Vec::new(),
    }
}
