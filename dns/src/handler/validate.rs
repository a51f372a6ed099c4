//! The edge: reject anything that is not one plain query before any lookup sees it.

use hickory_proto::op::{Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Queries carry no answer or authority records; the additional section holds at most an OPT
/// and a signature. Anything above this is hostile and refused before parsing records.
const MAX_ADDITIONALS: u16 = 2;

#[derive(Debug)]
pub enum Verdict {
    /// A well-formed query with exactly one question.
    Query(Message),
    /// Answer with this error (header-only response).
    Error(Metadata, ResponseCode),
    /// Not worth an answer: no readable header, or a response (answering those invites loops).
    Drop,
}

pub fn validate(bytes: &[u8]) -> Verdict {
    let mut decoder = BinDecoder::new(bytes);
    let Ok(Header { metadata, counts }) = Header::read(&mut decoder) else {
        return Verdict::Drop;
    };
    if metadata.message_type != MessageType::Query {
        return Verdict::Drop;
    }
    if metadata.op_code != OpCode::Query {
        return Verdict::Error(metadata, ResponseCode::NotImp);
    }
    if counts.queries != 1
        || counts.answers != 0
        || counts.authorities != 0
        || counts.additionals > MAX_ADDITIONALS
    {
        return Verdict::Error(metadata, ResponseCode::FormErr);
    }
    match Message::from_vec(bytes) {
        Ok(message) if message.queries.len() == 1 => Verdict::Query(message),
        _ => Verdict::Error(metadata, ResponseCode::FormErr),
    }
}
