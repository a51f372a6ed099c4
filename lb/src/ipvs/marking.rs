//! The nftables side of the IPVS backend: one table of its own per namespace that marks the
//! packets of each frontend with its firewall mark (so IPVS's fwmark services pick them up),
//! rejects new connections to frontends without an active backend, and source-NATs what IPVS
//! forwarded. Rendered as a whole and replaced atomically (`add table; delete table; table {}`
//! in one `nft -f`) when its text changes.

use std::fmt::Write as _;

use crate::model::{Frontend, Snat};

use super::marks::{MARK_FIRST, MARK_LAST};

/// Default name of the table (family `ip`) the IPVS backend owns in its namespace.
pub const DEFAULT_TABLE: &str = "routemesh_ipvs";
/// `ip daddr : meta mark`, address-only VIPs.
pub const MAP_VIP_ADDR_MARKS: &str = "vip_addr_marks";
/// `ip daddr . meta l4proto . th dport : meta mark`, VIPs with a port.
pub const MAP_VIP_PORT_MARKS: &str = "vip_port_marks";
/// `meta l4proto . th dport : meta mark`, published ports (any local address).
pub const MAP_PUBLISHED_MARKS: &str = "published_marks";
/// Marks of frontends without an active backend: their new connections are refused.
pub const SET_NO_BACKEND_MARKS: &str = "no_backend_marks";
/// filter hook prerouting, priority mangle (-150): marks arriving packets.
pub const CHAIN_MARK_PREROUTING: &str = "mark_prerouting";
/// filter hook output, priority mangle (-150): marks packets generated in the namespace.
pub const CHAIN_MARK_OUTPUT: &str = "mark_output";
/// Regular chain both mark hooks jump to: the three map lookups.
pub const CHAIN_MARK: &str = "set_mark";
/// Regular chain: refuses a new connection whose mark is in `no_backend_marks`.
pub const CHAIN_CHECK_BACKEND: &str = "check_backend";
/// Regular chain: TCP reset, else ICMP port unreachable.
pub const CHAIN_REJECT: &str = "reject_no_backend";
/// nat hook postrouting (100): SNAT of marked connections after IPVS forwarded them.
pub const CHAIN_SNAT: &str = "snat_postrouting";
/// The mangle priority, before IPVS (LOCAL_IN / LOCAL_OUT) and before nat.
pub const PRIORITY_MARK: i32 = -150;
pub const PRIORITY_SRCNAT: i32 = 100;

/// One frontend as the marking table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedFrontend {
    pub frontend: Frontend,
    pub mark: u32,
    /// False when no backend takes new connections: they are refused at once.
    pub has_active_backend: bool,
}

fn mark_text(mark: u32) -> String {
    format!("{mark:#010x}")
}

/// The full replacement script of the marking table. Pure; `frontends` in any order (the
/// output is sorted by frontend).
pub fn render_marking(table: &str, snat: Snat, frontends: &[MarkedFrontend]) -> String {
    let mut sorted = frontends.to_vec();
    sorted.sort_by_key(|f| f.frontend);
    let mut vip_addr = Vec::new();
    let mut vip_port = Vec::new();
    let mut published = Vec::new();
    let mut no_backend = Vec::new();
    for f in &sorted {
        let mark = mark_text(f.mark);
        match f.frontend {
            Frontend::VipAnyPort { addr } => vip_addr.push(format!("{addr} : {mark}")),
            Frontend::Vip { addr, port, proto } => {
                vip_port.push(format!("{addr} . {proto} . {port} : {mark}"))
            }
            Frontend::Published { port, proto } => {
                published.push(format!("{proto} . {port} : {mark}"))
            }
        }
        if !f.has_active_backend {
            no_backend.push(mark);
        }
    }
    let snat_stmt = match snat {
        Snat::Masquerade => "masquerade".to_string(),
        Snat::To(addr) => format!("snat ip to {addr}"),
    };

    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "add table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n"
    );
    collection(
        &mut s,
        "map",
        MAP_VIP_ADDR_MARKS,
        "ip daddr : meta mark",
        &vip_addr,
    );
    collection(
        &mut s,
        "map",
        MAP_VIP_PORT_MARKS,
        "ip daddr . meta l4proto . th dport : meta mark",
        &vip_port,
    );
    collection(
        &mut s,
        "map",
        MAP_PUBLISHED_MARKS,
        "meta l4proto . th dport : meta mark",
        &published,
    );
    collection(
        &mut s,
        "set",
        SET_NO_BACKEND_MARKS,
        "meta mark",
        &no_backend,
    );
    let _ = write!(
        s,
        "\tchain {CHAIN_MARK_PREROUTING} {{\n\
         \t\ttype filter hook prerouting priority {PRIORITY_MARK}; policy accept;\n\
         \t\tjump {CHAIN_MARK}\n\
         \t}}\n\
         \tchain {CHAIN_MARK_OUTPUT} {{\n\
         \t\ttype filter hook output priority {PRIORITY_MARK}; policy accept;\n\
         \t\tjump {CHAIN_MARK}\n\
         \t}}\n\
         \tchain {CHAIN_MARK} {{\n\
         \t\tmeta mark set ip daddr . meta l4proto . th dport map @{MAP_VIP_PORT_MARKS} goto {CHAIN_CHECK_BACKEND}\n\
         \t\tmeta mark set ip daddr map @{MAP_VIP_ADDR_MARKS} goto {CHAIN_CHECK_BACKEND}\n\
         \t\tfib daddr type local meta mark set meta l4proto . th dport map @{MAP_PUBLISHED_MARKS} goto {CHAIN_CHECK_BACKEND}\n\
         \t}}\n\
         \tchain {CHAIN_CHECK_BACKEND} {{\n\
         \t\tct state new meta mark @{SET_NO_BACKEND_MARKS} goto {CHAIN_REJECT}\n\
         \t}}\n\
         \tchain {CHAIN_REJECT} {{\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject with icmp type port-unreachable\n\
         \t}}\n\
         \tchain {CHAIN_SNAT} {{\n\
         \t\ttype nat hook postrouting priority {PRIORITY_SRCNAT}; policy accept;\n\
         \t\tmeta mark {first}-{last} {snat_stmt}\n\
         \t}}\n\
         }}\n",
        first = mark_text(MARK_FIRST),
        last = mark_text(MARK_LAST),
    );
    s
}

fn collection(s: &mut String, kind: &str, name: &str, typeof_: &str, elements: &[String]) {
    let _ = write!(s, "\t{kind} {name} {{\n\t\ttypeof {typeof_}\n");
    if !elements.is_empty() {
        let _ = writeln!(s, "\t\telements = {{ {} }}", elements.join(", "));
    }
    s.push_str("\t}\n");
}

/// Deletes the marking table; succeeds when it does not exist.
pub fn delete_marking(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}
