//! The TCP listener: one task per connection, each bounded in count, idle time, per-message
//! time and message size, so a slow or stalled client only ever holds its own slot.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::{answer_upstream, Forwarding, Shared};
use crate::handler::{Outcome, Transport};

pub(super) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(shared.ctx.limits.tcp_max_connections));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::debug!(%error, "tcp accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "too many DNS TCP connections; closing");
            continue;
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let _slot = slot;
            if let Err(reason) = serve_connection(&shared, stream).await {
                tracing::trace!(%peer, reason, "dns tcp connection closed");
            }
        });
    }
}

async fn serve_connection(shared: &Shared, mut stream: TcpStream) -> Result<(), &'static str> {
    let limits = shared.ctx.limits;
    loop {
        let len = match timeout(limits.tcp_idle_timeout, stream.read_u16()).await {
            Err(_) => return Err("idle timeout"),
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(len)) => len,
        };
        if len == 0 || len > limits.tcp_max_message {
            return Err("bad length");
        }
        let mut query = vec![0u8; usize::from(len)];
        match timeout(limits.tcp_io_timeout, stream.read_exact(&mut query)).await {
            Err(_) => return Err("slow query"),
            Ok(Err(_)) => return Err("short query"),
            Ok(Ok(_)) => {}
        }
        let reply = match shared.handle(&query, Transport::Tcp) {
            Outcome::Reply(reply) => reply,
            Outcome::Drop => return Err("dropped query"),
            Outcome::Forward(pending) => match shared.answer_now(pending) {
                Forwarding::Done(reply) => reply,
                Forwarding::Upstream(pending, forwarder) => match forwarder.try_reserve() {
                    Some(permit) => answer_upstream(pending, forwarder, permit).await,
                    None => pending.reply(None),
                },
            },
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Err("reply too long");
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match timeout(limits.tcp_io_timeout, stream.write_all(&framed)).await {
            Err(_) => return Err("slow reader"),
            Ok(Err(_)) => return Err("write failed"),
            Ok(Ok(())) => {}
        }
    }
}
