//! Kernel test of scale: 2,000 services on one node, every VIP in the kernel, and a change to
//! one service sending only that service's elements (watched with `nft monitor` in the
//! overlay's load-balancing namespace), never rewriting the table or anyone else's elements.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SERVICES: usize = 2000;

/// The VIP address (no prefix) of every service, by name.
fn vips(node: &Node) -> Vec<(String, String)> {
    let ls = node.json(&["service", "ls"]);
    ls.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let s = s.get("service").unwrap_or(s);
            let name = s["name"].as_str()?.to_string();
            let vip = s["vips"][0]["address"]
                .as_str()?
                .split('/')
                .next()?
                .to_string();
            Some((name, vip))
        })
        .collect()
}

/// The elements of the load balancer's "no backend" VIP set in namespace `ns`.
fn vip_set(ns: &std::path::Path) -> String {
    sh_in(ns, "nft list set ip routemesh_lb no_backend_vipa")
}

/// Table, chain and set handles of the load balancer (`nft -a`): a full rewrite changes them.
fn handles(ns: &std::path::Path) -> Vec<String> {
    sh_in(ns, "nft -a list table ip routemesh_lb")
        .lines()
        .filter(|l| {
            l.contains("# handle")
                && (l.contains("set ") || l.contains("chain ") || l.contains("table "))
        })
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn two_thousand_services_and_one_change_touches_one_service() {
    if !root_or_skip("two_thousand_services_and_one_change_touches_one_service") {
        return;
    }
    let node = Node::start("scale");
    node.ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.91.0.0/20",
        "app",
    ]);
    // Created by a shell loop in the node's namespace: 2,000 CLI calls.
    let script = format!(
        "for i in $(seq 1 {SERVICES}); do {bin} --host {sock} service create --detach \
         --replicas 0 --name s$i --network app -- sleep 1 >/dev/null || exit 1; done",
        bin = bin().display(),
        sock = node.socket().display()
    );
    let out = node.ns.sh(&script);
    assert!(out.status.success(), "creating services: {}", errtext(&out));

    let all = vips(&node);
    assert_eq!(all.len(), SERVICES, "service ls lists every service");
    let ov = node.netns_dir().join("ov-app");
    // Every VIP is in the kernel: no backend yet, so in the no-backend set (rejected).
    let missing = wait_for_or_timeout(Duration::from_secs(60), || {
        let set = vip_set(&ov);
        let missing: Vec<&String> = all
            .iter()
            .map(|(_, v)| v)
            .filter(|v| !set.contains(&format!("{v},")) && !set.contains(&format!("{v} ")))
            .collect();
        missing.is_empty().then_some(())
    });
    assert!(
        missing.is_some(),
        "VIPs missing from the kernel:\n{}",
        tail(&vip_set(&ov), 20)
    );
    let before = handles(&ov);
    assert!(before.len() > 3, "{before:?}");

    // Watch the kernel while one service comes and another goes.
    let mut monitor = Command::new("nsenter")
        .arg(format!("--net={}", ov.display()))
        .args(["nft", "monitor", "ruleset"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft monitor");
    // Let the monitor subscribe (it prints nothing until something changes).
    std::thread::sleep(Duration::from_millis(300));
    node.ok(&[
        "service",
        "create",
        "--detach",
        "--replicas",
        "0",
        "--name",
        "extra",
        "--network",
        "app",
        "--",
        "sleep",
        "1",
    ]);
    node.ok(&["service", "rm", "s7"]);
    let extra = vips(&node)
        .into_iter()
        .find(|(n, _)| n == "extra")
        .map(|(_, v)| v)
        .expect("extra's VIP");
    let s7 = all
        .iter()
        .find(|(n, _)| n == "s7")
        .map(|(_, v)| v.clone())
        .expect("s7");
    let settled = wait_for_or_timeout(Duration::from_secs(20), || {
        let set = vip_set(&ov);
        let has = |v: &str| set.contains(&format!("{v},")) || set.contains(&format!("{v} "));
        (has(&extra) && !has(&s7)).then_some(())
    });
    let _ = monitor.kill();
    let out = monitor.wait_with_output().expect("monitor output");
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(settled.is_some(), "extra's VIP in and s7's out: {seen}");

    let changes: Vec<&str> = seen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        changes
            .iter()
            .any(|l| l.starts_with("add element") && l.contains(&extra)),
        "{seen}"
    );
    assert!(
        changes
            .iter()
            .any(|l| l.starts_with("delete element") && l.contains(&s7)),
        "{seen}"
    );
    // Only the two services' elements moved: no table, chain or set was rewritten and no other
    // service's VIP was sent again.
    for l in &changes {
        assert!(
            l.contains("element") && (l.contains(&extra) || l.contains(&s7)),
            "a change beyond the two services: {l}\n{seen}"
        );
    }
    assert_eq!(
        handles(&ov),
        before,
        "the table's objects kept their handles"
    );
    // br0 answers every VIP through a local route (2,000 of them): the new one added, the
    // old one gone; none of them is an address.
    let local = sh_in(
        &ov,
        "ip -4 route show table local type local dev br0 proto static",
    );
    let routed: std::collections::BTreeSet<&str> = local
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(routed.contains(extra.as_str()), "{}", tail(&local, 5));
    assert!(!routed.contains(s7.as_str()), "{}", tail(&local, 5));
    assert_eq!(routed.len(), SERVICES, "{}", tail(&local, 5));
    let addrs = sh_in(&ov, "ip -o -4 addr show dev br0");
    assert!(addrs.lines().count() <= 2, "{}", tail(&addrs, 5));

    // And the daemon holds every service still.
    assert_eq!(vips(&node).len(), SERVICES);
}
