//! Entry points for the fuzz tests (`tests/fuzz.rs`): the client's reply path from one
//! received datagram to typed entries, and kernel-shaped replies built with the crate's own
//! encoder, all without a socket. Hidden from the docs; not part of the API.

use crate::consts::*;
use crate::decode;
use crate::encode;
use crate::error::{IpvsError, Operation};
use crate::exchange::{Exchange, ExchangeError, Progress};
use crate::message::IpvsReply;
use crate::types::{DestinationEntry, Family, Info, ServiceEntry, ServiceKey, Timeouts};
use crate::{Destination, Service};

/// The sequence number the replies below answer, and the family id they carry.
pub const SEQ: u32 = 7;
pub const FAMILY_ID: u16 = 0x24;

/// `NLM_F_MULTI`: a part of a dump.
pub const MULTI: u16 = 0x2;

/// One decoded reply, by its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Service(ServiceEntry),
    Destination(DestinationEntry),
    Timeouts(Timeouts),
    Info(Info),
    /// A command the client never reads a reply of.
    Other(u8),
}

/// What a datagram decoded to: whether the exchange is complete, and its entries so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub complete: bool,
    pub entries: Vec<Entry>,
}

/// Feeds `datagram` as the answer to request [`SEQ`] (a dump when `dump`) through the same
/// collector and decoders as the client; destinations default to `service_family`.
pub fn decode_datagram(
    datagram: &[u8],
    dump: bool,
    service_family: Family,
) -> Result<Decoded, IpvsError> {
    let op = Operation::ListServices;
    let mut exchange = Exchange::<IpvsReply>::new(SEQ, dump);
    let progress = exchange.feed(datagram).map_err(|e| match e {
        ExchangeError::Kernel(errno) => IpvsError::Kernel {
            op: op.clone(),
            errno,
        },
        ExchangeError::Decode(detail) => IpvsError::Decode {
            op: op.clone(),
            detail,
        },
    })?;
    let entries = exchange
        .into_replies()
        .iter()
        .map(|reply| match reply.cmd {
            IPVS_CMD_NEW_SERVICE => decode::service(reply).map(Entry::Service),
            IPVS_CMD_NEW_DEST => decode::destination(reply, service_family).map(Entry::Destination),
            IPVS_CMD_SET_CONFIG => decode::timeouts(reply).map(Entry::Timeouts),
            IPVS_CMD_SET_INFO => decode::info(reply).map(Entry::Info),
            other => Ok(Entry::Other(other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|detail| IpvsError::Decode { op, detail })?;
    Ok(Decoded {
        complete: progress == Progress::Complete,
        entries,
    })
}

/// The kernel's answer for `service`, as the encoder writes a new service (the kernel fills
/// the same attributes), with [`SEQ`] and `flags`.
pub fn service_message(service: &Service, flags: u16) -> Vec<u8> {
    encode::frame(FAMILY_ID, SEQ, flags, encode::new_service(service))
}

/// The kernel's answer for a destination of `key` (the service attribute it also carries is
/// ignored by the decoder, as the kernel's own replies omit it).
pub fn destination_message(key: &ServiceKey, dest: &Destination, flags: u16) -> Vec<u8> {
    encode::frame(FAMILY_ID, SEQ, flags, encode::new_dest(key, dest))
}

/// The kernel's answer to a timeouts query.
pub fn timeouts_message(timeouts: &Timeouts, flags: u16) -> Vec<u8> {
    encode::frame(FAMILY_ID, SEQ, flags, encode::set_config(timeouts))
}
