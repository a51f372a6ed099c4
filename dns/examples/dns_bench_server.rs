//! Benchmark server (not a test): serves `svc0..svcN` (vip mode, one VIP each) on one network,
//! forwarding every other name to `--upstream`, on a single-threaded runtime so it can be pinned
//! to one core. Used by `bench/dns/run.sh`.
//!
//! `dns_bench_server --names N --listen 127.0.0.1:5301 --upstream 127.0.0.54:53`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use routemesh_dns::{
    serve, EndpointMode, Forwarder, ForwarderConfig, Input, Limits, NetInput, Querier, Resolver,
    ServeContext, ServiceInput, Sockets, TableOptions,
};

fn arg(args: &[String], flag: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn input(names: u32) -> Input {
    let services = (0..names)
        .map(|i| ServiceInput {
            name: format!("svc{i}"),
            mode: EndpointMode::Vip,
            vips: vec![("bench".into(), Ipv4Addr::from(0x0a00_0000 + i + 1))],
            ports: vec![],
        })
        .collect();
    Input {
        networks: vec![NetInput { id: "bench".into() }],
        services,
        tasks: vec![],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let names: u32 = arg(&args, "--names", "100").parse()?;
    let listen: SocketAddr = arg(&args, "--listen", "127.0.0.1:5301").parse()?;
    let upstream: SocketAddr = arg(&args, "--upstream", "127.0.0.54:53").parse()?;

    let resolver = Arc::new(Resolver::default());
    let skipped = resolver.update(&input(names), TableOptions::default());
    if !skipped.is_empty() {
        return Err(format!("skipped inputs: {skipped:?}").into());
    }
    let forwarder = Arc::new(Forwarder::new(ForwarderConfig {
        upstreams: vec![upstream],
        ..ForwarderConfig::default()
    }));
    let sockets = Sockets {
        udp: vec![std::net::UdpSocket::bind(listen)?],
        tcp: vec![std::net::TcpListener::bind(listen)?],
    };
    let ctx = ServeContext {
        querier: Arc::new(Querier::new(vec!["bench".into()])),
        limits: Limits::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut handle = serve(resolver, Some(forwarder), sockets, ctx)?;
        eprintln!("serving {names} names on {listen}");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = handle.join_handle() => {}
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
