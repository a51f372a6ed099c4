//! One exchange with one upstream server: UDP first, TCP when the UDP answer is truncated.
//! Sockets come from an [`UpstreamSockets`] factory so the daemon can open them inside the
//! sandbox's network namespace.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::ForwardError;

/// EDNS size we advertise upstream; also our receive buffer.
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Creates the sockets used to reach upstream servers. Called on a tokio worker for every
/// upstream attempt, so it must not block for long (e.g. hand the work to a thread parked in the
/// target namespace and wait for its answer). A socket keeps the namespace it was created in.
pub trait UpstreamSockets: Send + Sync + 'static {
    /// An unconnected UDP socket, bound to an ephemeral port of `upstream`'s family.
    fn udp(&self, upstream: SocketAddr) -> io::Result<std::net::UdpSocket>;
    /// An unconnected TCP socket of `upstream`'s family.
    fn tcp(&self, upstream: SocketAddr) -> io::Result<TcpSocket>;
}

/// Opens upstream sockets in the caller's current network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentNamespace;

impl UpstreamSockets for CurrentNamespace {
    fn udp(&self, upstream: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        std::net::UdpSocket::bind(local)
    }

    fn tcp(&self, upstream: SocketAddr) -> io::Result<TcpSocket> {
        match upstream {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
    }
}

/// A fresh upstream query for `query`: random id (hickory's `Message::query`), RD set, EDNS.
pub fn upstream_request(query: &Query) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    message.set_edns(edns);
    message
}

/// Sends `request` to `upstream` and returns its answer, retrying over TCP when truncated.
pub async fn exchange(
    sockets: &dyn UpstreamSockets,
    upstream: SocketAddr,
    request: &Message,
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let bytes = request
        .to_vec()
        .map_err(|e| ForwardError::Encode(e.to_string()))?;
    let answer = exchange_udp(sockets, upstream, request, &bytes, deadline).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    exchange_tcp(sockets, upstream, request, &bytes, deadline).await
}

async fn exchange_udp(
    sockets: &dyn UpstreamSockets,
    upstream: SocketAddr,
    request: &Message,
    bytes: &[u8],
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let io_err = |e| ForwardError::Io(upstream, e);
    let std_socket = sockets.udp(upstream).map_err(io_err)?;
    std_socket.set_nonblocking(true).map_err(io_err)?;
    let socket = UdpSocket::from_std(std_socket).map_err(io_err)?;
    // Connected: the kernel drops datagrams from anyone but the upstream.
    socket.connect(upstream).await.map_err(io_err)?;
    socket.send(bytes).await.map_err(io_err)?;
    let mut buf = vec![0u8; usize::from(UPSTREAM_PAYLOAD).max(4096)];
    loop {
        let len = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| ForwardError::Timeout(upstream))?
            .map_err(io_err)?;
        // Ignore anything that is not the answer to this question (late or spoofed packets).
        if let Some(answer) = buf.get(..len).and_then(|b| matching_answer(request, b)) {
            return Ok(answer);
        }
    }
}

async fn exchange_tcp(
    sockets: &dyn UpstreamSockets,
    upstream: SocketAddr,
    request: &Message,
    bytes: &[u8],
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let io_err = |e| ForwardError::Io(upstream, e);
    let timeout = |_| ForwardError::Timeout(upstream);
    let socket = sockets.tcp(upstream).map_err(io_err)?;
    let mut stream = timeout_at(deadline, socket.connect(upstream))
        .await
        .map_err(timeout)?
        .map_err(io_err)?;
    let len =
        u16::try_from(bytes.len()).map_err(|_| ForwardError::Encode("query too long".into()))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    timeout_at(deadline, stream.write_all(&framed))
        .await
        .map_err(timeout)?
        .map_err(io_err)?;
    let answer_len = timeout_at(deadline, stream.read_u16())
        .await
        .map_err(timeout)?
        .map_err(io_err)?;
    let mut buf = vec![0u8; usize::from(answer_len)];
    timeout_at(deadline, stream.read_exact(&mut buf))
        .await
        .map_err(timeout)?
        .map_err(io_err)?;
    matching_answer(request, &buf).ok_or(ForwardError::Mismatch(upstream))
}

fn matching_answer(request: &Message, bytes: &[u8]) -> Option<Message> {
    let answer = Message::from_vec(bytes).ok()?;
    let same_question = match (answer.queries.first(), request.queries.first()) {
        (Some(a), Some(q)) => {
            a.query_type() == q.query_type()
                && a.query_class() == q.query_class()
                && a.name() == q.name()
        }
        _ => false,
    };
    (answer.metadata.id == request.metadata.id && same_question).then_some(answer)
}

/// Default per-query timeout when neither the caller nor resolv.conf says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
