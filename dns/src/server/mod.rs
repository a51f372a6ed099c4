//! Listeners: serve UDP sockets and TCP listeners the caller opened (inside a sandbox's
//! namespace, bound to 127.0.0.11:53) with one querier's view of the table.

mod tcp;
mod udp;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::forward::Forwarder;
use crate::handler::{self, Outcome, Pending, QueryContext, Transport, DEFAULT_MAX_UDP_PAYLOAD};
use crate::resolver::Resolver;

/// Who is behind a set of listeners: the sandbox's networks (most preferred first), which may
/// change while it is served.
#[derive(Debug)]
pub struct Querier {
    networks: ArcSwap<Vec<String>>,
}

impl Querier {
    pub fn new(networks: Vec<String>) -> Self {
        Querier {
            networks: ArcSwap::from_pointee(networks),
        }
    }

    /// Called when the sandbox joins or leaves a network.
    pub fn set_networks(&self, networks: Vec<String>) {
        self.networks.store(Arc::new(networks));
    }

    pub fn networks(&self) -> Arc<Vec<String>> {
        self.networks.load_full()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest UDP response sent (clients advertising less get less).
    pub max_udp_payload: u16,
    /// Time a TCP client may take to start its next query before it is closed.
    pub tcp_idle_timeout: Duration,
    /// Time a TCP client may take to send the rest of a query, or to read our answer.
    pub tcp_io_timeout: Duration,
    /// Largest TCP query accepted; a longer length prefix closes the connection.
    pub tcp_max_message: u16,
    /// TCP connections served at once; more are closed on accept.
    pub tcp_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_secs(3),
            tcp_max_message: 4096,
            tcp_max_connections: 64,
        }
    }
}

/// Sockets to serve, already bound (and, for TCP, listening) by the caller.
#[derive(Debug, Default)]
pub struct Sockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
}

#[derive(Clone, Debug)]
pub struct ServeContext {
    pub querier: Arc<Querier>,
    pub limits: Limits,
}

/// A running server. Dropping it does not stop the server; call [`ServerHandle::stop`].
#[derive(Debug)]
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl ServerHandle {
    /// Stops serving: all loops and connections end, sockets are closed.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops and waits until everything has ended.
    pub async fn shutdown(self) {
        self.stop();
        let _ = self.join.await;
    }

    pub fn join_handle(&mut self) -> &mut JoinHandle<()> {
        &mut self.join
    }
}

/// Serves `sockets` until stopped. Must be called inside a tokio runtime. `forwarder` `None`
/// answers SERVFAIL for every name routemesh does not know.
pub fn serve(
    resolver: Arc<Resolver>,
    forwarder: Option<Arc<Forwarder>>,
    sockets: Sockets,
    ctx: ServeContext,
) -> io::Result<ServerHandle> {
    let shared = Arc::new(Shared {
        resolver,
        forwarder,
        ctx,
    });
    let mut loops = JoinSet::new();
    for socket in sockets.udp {
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        loops.spawn(udp::serve(Arc::clone(&shared), socket));
    }
    for listener in sockets.tcp {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loops.spawn(tcp::serve(Arc::clone(&shared), listener));
    }
    let (stop, mut stopped) = watch::channel(false);
    let join = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                done = loops.join_next() => match done {
                    Some(Err(error)) if error.is_panic() => {
                        tracing::error!(%error, "DNS listener loop panicked");
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        // Dropping the set aborts the loops, which abort their own connection tasks.
        loops.shutdown().await;
    });
    Ok(ServerHandle { stop, join })
}

struct Shared {
    resolver: Arc<Resolver>,
    forwarder: Option<Arc<Forwarder>>,
    ctx: ServeContext,
}

impl Shared {
    fn handle(&self, bytes: &[u8], transport: Transport) -> Outcome {
        let networks = self.ctx.querier.networks.load();
        let ctx = QueryContext {
            networks: networks.as_slice(),
            transport,
            max_udp_payload: self.ctx.limits.max_udp_payload,
        };
        handler::handle(&self.resolver, bytes, &ctx)
    }

    /// Answers a forwarded query without waiting if possible: from the cache, or SERVFAIL when
    /// there is no forwarder; otherwise gives the pending query back for an upstream round trip.
    fn answer_now(&self, pending: Pending) -> Forwarding {
        let Some(forwarder) = &self.forwarder else {
            return Forwarding::Done(pending.reply(None));
        };
        match forwarder.cached(pending.query()) {
            Some(answer) => Forwarding::Done(pending.reply(Some(&answer))),
            None => Forwarding::Upstream(pending, Arc::clone(forwarder)),
        }
    }
}

enum Forwarding {
    Done(Vec<u8>),
    Upstream(Pending, Arc<Forwarder>),
}

/// Waits for upstream and builds the client's answer (SERVFAIL on failure).
async fn answer_upstream(
    pending: Pending,
    forwarder: Arc<Forwarder>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Vec<u8> {
    match forwarder.forward_reserved(pending.query(), permit).await {
        Ok(answer) => pending.reply(Some(&answer)),
        Err(error) => {
            tracing::debug!(%error, query = %pending.query(), "forwarding failed");
            pending.reply(None)
        }
    }
}

#[cfg(test)]
mod tests;
