//! The UDP loop: local answers inline, upstream round trips in bounded spawned tasks.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::{answer_upstream, Forwarding, Shared};
use crate::handler::{Outcome, Transport};

/// Largest query datagram read; longer ones are truncated by the kernel and then fail to parse.
const RECV_BUFFER: usize = 4096;

pub(super) async fn serve(shared: Arc<Shared>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut upstream_tasks = JoinSet::new();
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            Some(_) = upstream_tasks.join_next() => continue,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(error) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED); keep serving.
                tracing::trace!(%error, "udp recv");
                continue;
            }
        };
        let Some(query) = buf.get(..len) else {
            continue;
        };
        let reply = match shared.handle(query, Transport::Udp) {
            Outcome::Reply(reply) => reply,
            Outcome::Drop => continue,
            Outcome::Forward(pending) => match shared.answer_now(pending) {
                Forwarding::Done(reply) => reply,
                Forwarding::Upstream(pending, forwarder) => match forwarder.try_reserve() {
                    Some(permit) => {
                        let socket = Arc::clone(&socket);
                        upstream_tasks.spawn(async move {
                            let reply = answer_upstream(pending, forwarder, permit).await;
                            let _ = socket.send_to(&reply, peer).await;
                        });
                        continue;
                    }
                    None => pending.reply(None),
                },
            },
        };
        if let Err(error) = socket.send_to(&reply, peer).await {
            tracing::trace!(%error, %peer, "udp send");
        }
    }
}
