//! `routemesh demo`: three nodes and etcd on this machine, an overlay, a service of three
//! whoami replicas publishing 8080:80, and a client outside the cluster calling every node's
//! address in turn, showing which task (on which node) answered. Torn down at the end unless
//! `--keep`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::api::client::Client;
use crate::api::wait::{wait_converged, CONVERGE_TIMEOUT};
use crate::topology::{teardown_dir, Topology, CLIENT_ADDR, ETCD_ADDR};
use crate::wire::{NetworkCreate, ServiceCreate, TaskView};

pub struct DemoOptions {
    pub nodes: usize,
    pub keep: bool,
    pub dir: PathBuf,
    pub rounds: usize,
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("finding the routemesh binary")?;
    if opts.dir.exists() {
        anyhow::bail!(
            "{} exists: a demo is running there (tear it down with `routemesh demo --down {}`)",
            opts.dir.display(),
            opts.dir.display()
        );
    }
    println!(
        "starting etcd (TLS, client certificates) and {} nodes on an underlay bridge (in {})",
        opts.nodes,
        opts.dir.display()
    );
    let mut topo = match Topology::up(&opts.dir, opts.nodes, &bin, 10).await {
        Ok(t) => t,
        Err(e) => {
            teardown_dir(&opts.dir);
            return Err(e);
        }
    };
    let result = show(&topo, &opts).await;
    if opts.keep && result.is_ok() {
        println!("\nleft running:");
        println!(
            "  export ROUTEMESH_HOST={}",
            topo.nodes[0].socket().display()
        );
        println!("  routemesh task ls");
        println!(
            "  nsenter --net={} curl http://{}:8080/",
            topo.client.display(),
            topo.nodes[0].addr
        );
        let tls = topo.tls_dir();
        println!(
            "  etcd: https://{}:2379 from the fabric namespace, certificates in {}",
            ETCD_ADDR,
            tls.display()
        );
        println!("  routemesh demo --down {}", opts.dir.display());
    } else {
        println!("tearing down");
        topo.down();
    }
    result
}

async fn show(topo: &Topology, opts: &DemoOptions) -> anyhow::Result<()> {
    let c = Client::new(&topo.nodes[0].socket());
    let _: crate::model::Network = c
        .post(
            "/v1/networks",
            &NetworkCreate {
                name: "app".into(),
                driver: Some("overlay".into()),
                ..Default::default()
            },
        )
        .await?;
    println!("$ routemesh network create --driver overlay app");
    let _: crate::model::Service = c
        .post(
            "/v1/services",
            &ServiceCreate {
                name: "web".into(),
                replicas: Some(opts.nodes as i64),
                networks: vec!["app".into()],
                env: vec![],
                command: vec![
                    "routemesh".into(),
                    "whoami".into(),
                    "--port".into(),
                    "80".into(),
                ],
                endpoint_mode: None,
                publish: vec!["8080:80".into()],
                lb_scheduler: None,
                ..Default::default()
            },
        )
        .await?;
    println!(
        "$ routemesh service create --name web --replicas {} --network app --publish 8080:80 -- routemesh whoami --port 80",
        opts.nodes
    );
    wait_converged(&c, "web", CONVERGE_TIMEOUT).await?;
    let tasks: Vec<TaskView> = c.get("/v1/tasks?service=web").await?;
    let on: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| (t.name.clone(), t.node.clone()))
        .collect();
    for t in &tasks {
        println!("  {} runs on {}", t.name, t.node);
    }
    // The tasks run; every node's load balancer follows within moments.
    for n in &topo.nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while topo.client_get(n.addr, 8080).is_err() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("\ncurl loop from a client outside the cluster ({CLIENT_ADDR}):");
    let mut answered = 0;
    let mut failed = 0;
    for round in 1..=opts.rounds {
        for n in &topo.nodes {
            let who = match topo.client_curl(n.addr, 8080) {
                Ok(body) => body
                    .lines()
                    .find_map(|l| l.strip_prefix("Task: "))
                    .map(str::to_string)
                    .unwrap_or_else(|| "?".into()),
                Err(e) => {
                    failed += 1;
                    format!("failed: {e:#}")
                }
            };
            if !who.starts_with("failed") {
                answered += 1;
            }
            let node = on.get(&who).map(String::as_str).unwrap_or("?");
            println!(
                "  round {round}: http://{}:8080/ ({}) -> {who} on {node}",
                n.addr, n.name
            );
        }
    }
    println!("{answered} answered, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} requests failed");
    }
    Ok(())
}

pub fn down(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        anyhow::bail!("{} does not exist", dir.display());
    }
    teardown_dir(dir);
    println!("removed {}", dir.display());
    Ok(())
}
