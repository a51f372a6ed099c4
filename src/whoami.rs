//! `routemesh whoami`: the demo workload. Answers every HTTP request (or UDP datagram) with
//! who answered: task name, hostname, addresses and the client's address, one per line.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The answer's text for a client at `peer`.
pub fn describe(peer: SocketAddr) -> String {
    let task = std::env::var("ROUTEMESH_TASK_NAME").unwrap_or_default();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = format!("Task: {task}\nHostname: {host}\n");
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(sin) = a.address.as_ref().and_then(|x| x.as_sockaddr_in()) {
                s.push_str(&format!("IP: {}\n", sin.ip()));
            }
        }
    }
    s.push_str(&format!("RemoteAddr: {peer}\n"));
    s
}

/// Serves until SIGTERM or SIGINT. As a container's first process (pid 1 of its namespace)
/// it gets no default signal action, so it must stop on TERM itself.
pub async fn run(port: u16, udp: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    tokio::select! {
        r = serve(port, udp) => r,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

async fn serve(port: u16, udp: bool) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    if udp {
        let sock = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding udp {addr}"))?;
        println!("whoami: answering udp on {addr}");
        let mut buf = [0u8; 2048];
        loop {
            let (_, peer) = sock.recv_from(&mut buf).await.context("receiving")?;
            let _ = sock.send_to(describe(peer).as_bytes(), peer).await;
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding tcp {addr}"))?;
    println!("whoami: answering http on {addr}");
    loop {
        let (mut conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        tokio::spawn(async move {
            // Read the request head (bounded), then answer and close.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let body = describe(peer);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
