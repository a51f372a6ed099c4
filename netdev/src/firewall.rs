//! The node namespace's own nftables table. Every sync replaces the table's whole content in
//! one `nft -f` transaction; nothing outside this table is ever read or touched.
//!
//! `apply` and `remove` block on the `nft` process: call them from `spawn_blocking`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::netns;

/// Family of the table.
pub const FAMILY: &str = "ip";
/// The table routemesh owns in the node namespace.
pub const TABLE: &str = "routemesh";
/// NAT chain on the postrouting hook (priority srcnat): egress masquerade.
pub const CHAIN_POSTROUTING: &str = "postrouting";
/// NAT chain on the prerouting hook (priority dstnat): published ports from other hosts.
pub const CHAIN_PREROUTING: &str = "prerouting";
/// NAT chain on the output hook (priority dstnat): published ports from the node itself.
pub const CHAIN_OUTPUT: &str = "output";
/// Set of `inet_proto . inet_service` published in ingress mode.
pub const SET_INGRESS_PORTS: &str = "ingress_ports";
/// The binary that applies scripts.
pub const NFT: &str = "nft";

/// What the node's table should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFirewallSpec {
    pub masquerade: Vec<Masquerade>,
    /// The routing mesh's published ports, DNATed to the ingress sandbox.
    pub ingress: Option<IngressDnat>,
    /// Ports published in host mode, DNATed straight to this node's tasks.
    pub host_ports: Vec<HostPort>,
}

pub use routemesh_types::Proto;

/// Any local address's `ports` go to the ingress sandbox (same port), which load-balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressDnat {
    /// The ingress sandbox's address on the gateway bridge.
    pub sbox: std::net::Ipv4Addr,
    pub gw_bridge: String,
    pub gw_subnet: Ipv4Net,
    pub ports: Vec<(Proto, u16)>,
}

/// A host-mode port: a random pick among this node's tasks (address on the gateway bridge,
/// target port). Rare and small, so one rule per port is fine here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub proto: Proto,
    pub port: u16,
    pub targets: Vec<(std::net::Ipv4Addr, u16)>,
}

/// Traffic from `subnet` leaving through any interface other than `bridge` is masqueraded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Masquerade {
    pub subnet: Ipv4Net,
    pub bridge: String,
}

/// Refuses names that could not be quoted safely into a script.
pub fn validate(spec: &NodeFirewallSpec) -> Result<()> {
    for m in &spec.masquerade {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if m.bridge.is_empty() || m.bridge.len() > 15 || !m.bridge.chars().all(ok_char) {
            return Err(Error::Invalid {
                what: "masquerade bridge name".into(),
                detail: format!("{:?}", m.bridge),
            });
        }
    }
    Ok(())
}

/// A complete `nft -f` script replacing the table's content atomically, rules in a
/// deterministic order (sorted, duplicates dropped).
pub fn render(spec: &NodeFirewallSpec) -> String {
    let mut masquerade: Vec<Masquerade> = spec
        .masquerade
        .iter()
        .map(|m| Masquerade {
            subnet: m.subnet.trunc(),
            bridge: m.bridge.clone(),
        })
        .collect();
    masquerade.sort();
    masquerade.dedup();
    let mut out = replace_prelude();
    out.push_str(&format!("table {FAMILY} {TABLE} {{\n"));
    let dnat_rules = dnat_rules(spec);
    if let Some(ing) = &spec.ingress {
        let mut ports = ing.ports.clone();
        ports.sort();
        ports.dedup();
        out.push_str(&format!(
            "\tset {SET_INGRESS_PORTS} {{\n\t\ttype inet_proto . inet_service\n"
        ));
        if !ports.is_empty() {
            let elems: Vec<String> = ports.iter().map(|(p, n)| format!("{p} . {n}")).collect();
            out.push_str(&format!("\t\telements = {{ {} }}\n", elems.join(", ")));
        }
        out.push_str("\t}\n");
    }
    if !dnat_rules.is_empty() {
        // nft 1.0.6 knows the name `dstnat` on prerouting only; -100 is the same priority.
        for (chain, hook, prio) in [
            (CHAIN_PREROUTING, "prerouting", "dstnat"),
            (CHAIN_OUTPUT, "output", "-100"),
        ] {
            out.push_str(&format!("\tchain {chain} {{\n"));
            out.push_str(&format!(
                "\t\ttype nat hook {hook} priority {prio}; policy accept;\n"
            ));
            for r in &dnat_rules {
                out.push_str(&format!("\t\t{r}\n"));
            }
            out.push_str("\t}\n");
        }
    }
    out.push_str(&format!("\tchain {CHAIN_POSTROUTING} {{\n"));
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    for m in &masquerade {
        out.push_str(&format!(
            "\t\tip saddr {} oifname != \"{}\" masquerade\n",
            m.subnet, m.bridge
        ));
    }
    if let Some(ing) = &spec.ingress {
        // The node itself (127.0.0.1 included) and tasks calling a published port through
        // the node's address reach the sandbox on the bridge they would get replies from
        // directly: source-NAT them so replies come back through this namespace.
        out.push_str(&format!(
            "\t\toifname \"{}\" ct status dnat fib saddr type local masquerade\n",
            ing.gw_bridge
        ));
        out.push_str(&format!(
            "\t\toifname \"{}\" ct status dnat ip saddr {} masquerade\n",
            ing.gw_bridge,
            ing.gw_subnet.trunc()
        ));
    }
    out.push_str("\t}\n}\n");
    out
}

fn dnat_rules(spec: &NodeFirewallSpec) -> Vec<String> {
    let mut rules = Vec::new();
    let mut host = spec.host_ports.clone();
    host.sort();
    for hp in host.iter().filter(|h| !h.targets.is_empty()) {
        let mut targets = hp.targets.clone();
        targets.sort();
        let elems: Vec<String> = targets
            .iter()
            .enumerate()
            .map(|(i, (a, p))| format!("{i} : {a} . {p}"))
            .collect();
        rules.push(format!(
            "fib daddr type local meta l4proto {} th dport {} dnat ip to numgen random mod {} map {{ {} }}",
            hp.proto,
            hp.port,
            targets.len(),
            elems.join(", ")
        ));
    }
    if let Some(ing) = &spec.ingress {
        rules.push(format!(
            "fib daddr type local meta l4proto . th dport @{SET_INGRESS_PORTS} dnat ip to {}",
            ing.sbox
        ));
    }
    rules
}

/// Validates, renders and applies `spec` in `netns` (None: the current namespace).
pub fn sync(netns: Option<&Path>, spec: &NodeFirewallSpec) -> Result<()> {
    validate(spec)?;
    apply(netns, &render(spec))
}

/// Runs `nft -f -` with `script` inside `netns` (None: the current namespace).
pub fn apply(netns: Option<&Path>, script: &str) -> Result<()> {
    let ns_file = netns.map(netns::open).transpose()?;
    let mut cmd = Command::new(NFT);
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = &ns_file {
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe setns(2) call on a descriptor opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let op = format!("applying table {FAMILY} {TABLE} in {}", where_(netns));
    let nft_err = |e: std::io::Error| Error::Nft {
        op: op.clone(),
        stderr: e.to_string(),
    };
    let mut child = cmd.spawn().map_err(nft_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(script.as_bytes()) {
            // nft quit early: reap it before reporting, so no zombie is left.
            drop(stdin);
            let _ = child.wait();
            return Err(nft_err(e));
        }
    }
    let output = child.wait_with_output().map_err(nft_err)?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Nft {
        op: op.clone(),
        stderr: format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

/// Deletes the table if it exists.
pub fn remove(netns: Option<&Path>) -> Result<()> {
    apply(
        netns,
        &format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"),
    )
}

/// Declaring the table first makes the delete succeed whether or not it existed.
fn replace_prelude() -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
}

fn where_(netns: Option<&Path>) -> String {
    netns.map_or_else(|| "current netns".into(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masq(subnet: &str, bridge: &str) -> Masquerade {
        Masquerade {
            subnet: subnet.parse().unwrap_or_else(|e| panic!("{subnet}: {e}")),
            bridge: bridge.into(),
        }
    }

    #[test]
    fn render_is_sorted_deduplicated_and_replaces_the_table() {
        let spec = NodeFirewallSpec {
            masquerade: vec![
                masq("172.18.0.1/16", "rm_gwbridge"),
                masq("10.10.0.0/24", "rm-br-web"),
                masq("172.18.0.0/16", "rm_gwbridge"),
            ],
            ..Default::default()
        };
        let golden = "table ip routemesh {}\n\
                      delete table ip routemesh\n\
                      table ip routemesh {\n\
                      \tchain postrouting {\n\
                      \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                      \t\tip saddr 10.10.0.0/24 oifname != \"rm-br-web\" masquerade\n\
                      \t\tip saddr 172.18.0.0/16 oifname != \"rm_gwbridge\" masquerade\n\
                      \t}\n\
                      }\n";
        assert_eq!(render(&spec), golden);
    }

    pub(crate) fn mesh_spec() -> NodeFirewallSpec {
        NodeFirewallSpec {
            masquerade: vec![masq("172.18.0.0/16", "rm_gwbridge")],
            ingress: Some(IngressDnat {
                sbox: "172.18.0.2".parse().unwrap_or_else(|e| panic!("{e}")),
                gw_bridge: "rm_gwbridge".into(),
                gw_subnet: "172.18.0.0/16".parse().unwrap_or_else(|e| panic!("{e}")),
                ports: vec![(Proto::Udp, 9053), (Proto::Tcp, 8080), (Proto::Tcp, 8080)],
            }),
            host_ports: vec![HostPort {
                proto: Proto::Tcp,
                port: 8081,
                targets: vec![
                    ("172.18.0.4".parse().unwrap_or_else(|e| panic!("{e}")), 80),
                    ("172.18.0.3".parse().unwrap_or_else(|e| panic!("{e}")), 80),
                ],
            }],
        }
    }

    #[test]
    fn published_ports_dispatch_by_set_lookup() {
        let golden = "table ip routemesh {}\n\
                      delete table ip routemesh\n\
                      table ip routemesh {\n\
                      \tset ingress_ports {\n\
                      \t\ttype inet_proto . inet_service\n\
                      \t\telements = { tcp . 8080, udp . 9053 }\n\
                      \t}\n\
                      \tchain prerouting {\n\
                      \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
                      \t\tfib daddr type local meta l4proto tcp th dport 8081 dnat ip to numgen random mod 2 map { 0 : 172.18.0.3 . 80, 1 : 172.18.0.4 . 80 }\n\
                      \t\tfib daddr type local meta l4proto . th dport @ingress_ports dnat ip to 172.18.0.2\n\
                      \t}\n\
                      \tchain output {\n\
                      \t\ttype nat hook output priority -100; policy accept;\n\
                      \t\tfib daddr type local meta l4proto tcp th dport 8081 dnat ip to numgen random mod 2 map { 0 : 172.18.0.3 . 80, 1 : 172.18.0.4 . 80 }\n\
                      \t\tfib daddr type local meta l4proto . th dport @ingress_ports dnat ip to 172.18.0.2\n\
                      \t}\n\
                      \tchain postrouting {\n\
                      \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                      \t\tip saddr 172.18.0.0/16 oifname != \"rm_gwbridge\" masquerade\n\
                      \t\toifname \"rm_gwbridge\" ct status dnat fib saddr type local masquerade\n\
                      \t\toifname \"rm_gwbridge\" ct status dnat ip saddr 172.18.0.0/16 masquerade\n\
                      \t}\n\
                      }\n";
        assert_eq!(render(&mesh_spec()), golden);
    }

    #[test]
    fn empty_spec_still_declares_the_chain() {
        let script = render(&NodeFirewallSpec::default());
        assert!(script.ends_with("policy accept;\n\t}\n}\n"), "{script}");
    }

    #[test]
    fn unquotable_bridge_names_are_refused() {
        let bad = NodeFirewallSpec {
            masquerade: vec![masq("10.0.0.0/24", "x\" accept")],
            ..Default::default()
        };
        assert!(validate(&bad).is_err());
        let good = NodeFirewallSpec {
            masquerade: vec![masq("10.0.0.0/24", "rm_gwbridge")],
            ..Default::default()
        };
        assert!(validate(&good).is_ok());
    }
}
