//! One request's replies: which datagrams belong to it and when it is complete. Pure, so
//! multipart dumps can be tested without a kernel.

use std::fmt::Debug;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, ParseableParametrized};
use netlink_packet_generic::{GenlHeader, GenlMessage};

const NLMSG_HDRLEN: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    More,
    Complete,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExchangeError {
    /// The kernel answered with this (positive) errno.
    Kernel(i32),
    Decode(String),
}

/// Collects the replies to request `seq`. A dump ends with `NLMSG_DONE`; any other request
/// was sent with `NLM_F_ACK` and ends with the acknowledgement.
pub(crate) struct Exchange<F> {
    seq: u32,
    dump: bool,
    replies: Vec<F>,
}

impl<F> Exchange<F>
where
    F: ParseableParametrized<[u8], GenlHeader> + Debug,
{
    pub(crate) fn new(seq: u32, dump: bool) -> Self {
        Exchange {
            seq,
            dump,
            replies: Vec::new(),
        }
    }

    pub(crate) fn into_replies(self) -> Vec<F> {
        self.replies
    }

    /// Reads every netlink message in one datagram.
    pub(crate) fn feed(&mut self, datagram: &[u8]) -> Result<Progress, ExchangeError> {
        let mut offset = 0;
        while datagram.len().saturating_sub(offset) >= NLMSG_HDRLEN {
            let rest = &datagram[offset..];
            let header = NetlinkBuffer::new_checked(rest)
                .map_err(|e| ExchangeError::Decode(e.to_string()))?;
            let len = header.length() as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(ExchangeError::Decode(format!(
                    "netlink message at byte {offset} claims {len} bytes, {} left",
                    rest.len()
                )));
            }
            let message = NetlinkMessage::<GenlMessage<F>>::deserialize(&rest[..len])
                .map_err(|e| ExchangeError::Decode(e.to_string()))?;
            offset += (len + 3) & !3;
            if message.header.sequence_number != self.seq {
                // A late answer to an earlier request that gave up; not ours.
                continue;
            }
            match message.payload {
                NetlinkPayload::InnerMessage(genl) => self.replies.push(genl.payload),
                NetlinkPayload::Error(error) => match error.code {
                    Some(code) => return Err(ExchangeError::Kernel(code.get().saturating_abs())),
                    None if !self.dump => return Ok(Progress::Complete),
                    None => {}
                },
                NetlinkPayload::Done(done) => {
                    if done.code != 0 {
                        return Err(ExchangeError::Kernel(done.code.saturating_abs()));
                    }
                    return Ok(Progress::Complete);
                }
                _ => {}
            }
        }
        Ok(Progress::More)
    }
}
