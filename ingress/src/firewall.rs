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
/// The binary that applies scripts.
pub const NFT: &str = "nft";

/// What the node's table should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFirewallSpec {
    pub masquerade: Vec<Masquerade>,
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
    out.push_str(&format!("\tchain {CHAIN_POSTROUTING} {{\n"));
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    for m in &masquerade {
        out.push_str(&format!(
            "\t\tip saddr {} oifname != \"{}\" masquerade\n",
            m.subnet, m.bridge
        ));
    }
    out.push_str("\t}\n}\n");
    out
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
        stdin.write_all(script.as_bytes()).map_err(nft_err)?;
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

    #[test]
    fn empty_spec_still_declares_the_chain() {
        let script = render(&NodeFirewallSpec::default());
        assert!(script.ends_with("policy accept;\n\t}\n}\n"), "{script}");
    }

    #[test]
    fn unquotable_bridge_names_are_refused() {
        let bad = NodeFirewallSpec {
            masquerade: vec![masq("10.0.0.0/24", "x\" accept")],
        };
        assert!(validate(&bad).is_err());
        let good = NodeFirewallSpec {
            masquerade: vec![masq("10.0.0.0/24", "rm_gwbridge")],
        };
        assert!(validate(&good).is_ok());
    }
}
