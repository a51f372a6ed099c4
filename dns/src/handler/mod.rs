//! Query handling: raw bytes in, raw bytes out. `validate` rejects malformed packets at the
//! edge, `answer` serves routemesh names from the table, and everything else is handed back to
//! the caller as [`Outcome::Forward`] so this layer stays free of I/O (and testable without
//! sockets).

mod answer;
mod encode;
mod validate;

use hickory_proto::op::{Edns, Message, Metadata, Query, ResponseCode};
use hickory_proto::rr::DNSClass;

pub use encode::MIN_UDP_PAYLOAD;

use crate::resolver::Resolver;
use crate::table::{Lookup, NameKey};
use validate::Verdict;

/// EDNS payload size routemesh advertises and uses by default (the DNS flag day 2020 value).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Who is asking, and over what.
#[derive(Clone, Copy, Debug)]
pub struct QueryContext<'q, N: AsRef<str>> {
    /// The querier's networks, most preferred first.
    pub networks: &'q [N],
    pub transport: Transport,
    /// Largest UDP response this server sends, whatever the client advertises (min 512).
    pub max_udp_payload: u16,
}

#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not a routemesh name: ask upstream, then call [`Pending::reply`].
    Forward(Pending),
    /// Send nothing.
    Drop,
}

/// A query waiting for an upstream answer.
#[derive(Debug)]
pub struct Pending {
    request: Message,
    limit: u16,
}

impl Pending {
    pub fn query(&self) -> &Query {
        // validate() guarantees exactly one question.
        &self.request.queries[0]
    }

    /// The client's response built from the upstream's answer (its rcode and records), or
    /// SERVFAIL when there is none.
    pub fn reply(&self, upstream: Option<&Message>) -> Vec<u8> {
        let mut response = response_to(&self.request, false);
        match upstream {
            Some(answer) => {
                response.metadata.response_code = answer.metadata.response_code;
                response.answers.clone_from(&answer.answers);
                response.authorities.clone_from(&answer.authorities);
                response.additionals.clone_from(&answer.additionals);
            }
            None => response.metadata.response_code = ResponseCode::ServFail,
        }
        encode::encode(&response, self.limit)
    }
}

/// Answers `bytes` from the resolver's current table, or says what else to do.
pub fn handle<N: AsRef<str>>(resolver: &Resolver, bytes: &[u8], ctx: &QueryContext<N>) -> Outcome {
    let request = match validate::validate(bytes) {
        Verdict::Query(request) => request,
        Verdict::Error(metadata, rcode) => return error_reply(metadata, rcode),
        Verdict::Drop => return Outcome::Drop,
    };
    let limit = response_limit(&request, ctx);
    let query = &request.queries[0];
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return error_reply(request.metadata, ResponseCode::Refused);
    }
    let Some(key) = NameKey::from_name(query.name()) else {
        return error_reply(request.metadata, ResponseCode::FormErr);
    };
    resolver.with_table(|table| match table.lookup(&key, ctx.networks) {
        Lookup::Absent => Outcome::Forward(Pending {
            request: request.clone(),
            limit,
        }),
        Lookup::Hidden => {
            let mut response = response_to(&request, true);
            response.metadata.response_code = ResponseCode::NXDomain;
            Outcome::Reply(encode::encode(&response, limit))
        }
        Lookup::Found(records) => {
            let mut response = response_to(&request, true);
            answer::answer(
                &mut response,
                query.name(),
                query.query_type(),
                records,
                table.ttl(),
                resolver.next_rotation(),
            );
            Outcome::Reply(encode::encode(&response, limit))
        }
    })
}

fn error_reply(metadata: Metadata, rcode: ResponseCode) -> Outcome {
    Outcome::Reply(encode::header_only(metadata, rcode))
}

/// The largest response for this request: the transport's maximum over TCP; over UDP the
/// client's EDNS size (512 without EDNS), capped by the server's.
fn response_limit<N: AsRef<str>>(request: &Message, ctx: &QueryContext<N>) -> u16 {
    match ctx.transport {
        Transport::Tcp => u16::MAX,
        Transport::Udp => {
            let client = request
                .edns
                .as_ref()
                .map_or(MIN_UDP_PAYLOAD, |e| e.max_payload().max(MIN_UDP_PAYLOAD));
            client.min(ctx.max_udp_payload.max(MIN_UDP_PAYLOAD))
        }
    }
}

/// An empty response echoing the question; OPT only if the client sent one (RFC 6891 6.1.1).
fn response_to(request: &Message, authoritative: bool) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = authoritative;
    response.metadata.recursion_available = true;
    response.queries.clone_from(&request.queries);
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(DEFAULT_MAX_UDP_PAYLOAD);
        response.edns = Some(edns);
    }
    response
}

#[cfg(test)]
mod tests;
