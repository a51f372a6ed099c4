//! The node namespace's own nftables table: published ports (the routing mesh's, DNATed to
//! the ingress sandbox, and host-mode ones, straight to local tasks) and egress masquerade.
//! Built as an nft model; every sync replaces the table's whole content in one transaction,
//! and nothing outside this table is ever read or touched.
//!
//! `sync` and `remove` block on the `nft` process: call them from `spawn_blocking`.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use routemesh_nft::{
    AddrType, BaseChain, Chain, ChainType, Collection, CtStatus, DataType, Declare, Element,
    ElementLayout, Executor, Expr, Hook, KeyDecl, MapRef, Match, NftCmd, Priority, Rule, Stmt,
    Style, Table, Transaction, Value,
};

use crate::error::{Error, Result};

/// The table routemesh owns in the node namespace.
pub const TABLE: &str = routemesh_nft::tables::NODE;
/// NAT chain on the postrouting hook (priority srcnat): egress masquerade.
pub const CHAIN_POSTROUTING: &str = "postrouting";
/// NAT chain on the prerouting hook (priority dstnat): published ports from other hosts.
pub const CHAIN_PREROUTING: &str = "prerouting";
/// NAT chain on the output hook (priority dstnat): published ports from the node itself.
pub const CHAIN_OUTPUT: &str = "output";
/// Set of `inet_proto . inet_service` published in ingress mode.
pub const SET_INGRESS_PORTS: &str = "ingress_ports";

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
    pub sbox: Ipv4Addr,
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
    pub targets: Vec<(Ipv4Addr, u16)>,
}

/// Traffic from `subnet` leaving through any interface other than `bridge` is masqueraded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Masquerade {
    pub subnet: Ipv4Net,
    pub bridge: String,
}

/// Refuses what could not be written into the table safely (a bridge name nft would misread).
pub fn validate(spec: &NodeFirewallSpec) -> Result<()> {
    routemesh_nft::check::table(&table(spec)).map_err(|source| Error::Nft {
        op: format!("checking table ip {TABLE}"),
        source,
    })
}

/// The whole table for `spec`, rules in a deterministic order (sorted, duplicates dropped).
pub fn table(spec: &NodeFirewallSpec) -> Table {
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
    let mut t = Table::new(TABLE).with_style(Style {
        declare: Declare::EmptyBlock,
        elements: ElementLayout::OneLine,
    });
    if let Some(ing) = &spec.ingress {
        let mut ports = ing.ports.clone();
        ports.sort();
        ports.dedup();
        t.collections.push(
            Collection::set(
                SET_INGRESS_PORTS,
                KeyDecl::Type(vec![DataType::InetProto, DataType::InetService]),
            )
            .with_elements(
                ports
                    .iter()
                    .map(|(p, n)| Element::key(vec![Value::Proto(*p), Value::Port(*n)]))
                    .collect(),
            ),
        );
    }
    let dnat_rules = dnat_rules(spec);
    if !dnat_rules.is_empty() {
        // nft 1.0.6 knows the name `dstnat` on prerouting only; -100 is the same priority.
        for (chain, hook, prio) in [
            (CHAIN_PREROUTING, Hook::Prerouting, Priority::Dstnat),
            (CHAIN_OUTPUT, Hook::Output, Priority::Num(-100)),
        ] {
            t.chains.push(Chain::base(
                chain,
                BaseChain::new(ChainType::Nat, hook, prio),
                dnat_rules.clone(),
            ));
        }
    }
    let mut post: Vec<Rule> = masquerade
        .iter()
        .map(|m| {
            Rule::new(
                vec![
                    Match::Eq(Expr::IpSaddr, Value::Net(m.subnet)),
                    Match::Ne(Expr::Oifname, Value::Iface(m.bridge.clone())),
                ],
                vec![Stmt::Masquerade],
            )
        })
        .collect();
    if let Some(ing) = &spec.ingress {
        // The node itself (127.0.0.1 included) and tasks calling a published port through
        // the node's address reach the sandbox on the bridge they would get replies from
        // directly: source-NAT them so replies come back through this namespace.
        let to_sbox = || {
            vec![
                Match::Eq(Expr::Oifname, Value::Iface(ing.gw_bridge.clone())),
                Match::Eq(Expr::CtStatus, Value::CtStatus(CtStatus::Dnat)),
            ]
        };
        let mut from_node = to_sbox();
        from_node.push(Match::Eq(
            Expr::FibSaddrType,
            Value::AddrType(AddrType::Local),
        ));
        let mut from_tasks = to_sbox();
        from_tasks.push(Match::Eq(Expr::IpSaddr, Value::Net(ing.gw_subnet.trunc())));
        post.push(Rule::new(from_node, vec![Stmt::Masquerade]));
        post.push(Rule::new(from_tasks, vec![Stmt::Masquerade]));
    }
    t.chains.push(Chain::base(
        CHAIN_POSTROUTING,
        BaseChain::new(ChainType::Nat, Hook::Postrouting, Priority::Srcnat),
        post,
    ));
    t
}

fn dnat_rules(spec: &NodeFirewallSpec) -> Vec<Rule> {
    let local = || Match::Eq(Expr::FibDaddrType, Value::AddrType(AddrType::Local));
    let mut rules = Vec::new();
    let mut host = spec.host_ports.clone();
    host.sort();
    for hp in host.iter().filter(|h| !h.targets.is_empty()) {
        let mut targets = hp.targets.clone();
        targets.sort();
        let elements = targets
            .iter()
            .zip(0u32..)
            .map(|((a, p), i)| {
                Element::mapping(vec![Value::Int(i)], vec![Value::Addr(*a), Value::Port(*p)])
            })
            .collect();
        rules.push(Rule::new(
            vec![
                local(),
                Match::Eq(Expr::L4proto, Value::Proto(hp.proto)),
                Match::Eq(Expr::Dport, Value::Port(hp.port)),
            ],
            vec![Stmt::DnatMap {
                key: vec![Expr::Numgen(targets.len() as u32)],
                map: MapRef::Anonymous(elements),
            }],
        ));
    }
    if let Some(ing) = &spec.ingress {
        rules.push(Rule::new(
            vec![
                local(),
                Match::InSet(
                    vec![Expr::L4proto, Expr::Dport],
                    SET_INGRESS_PORTS.to_string(),
                ),
            ],
            vec![Stmt::DnatTo {
                addr: ing.sbox,
                port: None,
            }],
        ));
    }
    rules
}

/// Replaces the table with `spec`'s in `netns` (None: the current namespace).
pub fn sync(netns: Option<&Path>, spec: &NodeFirewallSpec) -> Result<()> {
    replace(netns, table(spec))
}

/// Replaces the table with `table` (built by [`table`]) in one transaction; the executor
/// checks it first, as [`validate`] does, and the error names the namespace.
pub fn replace(netns: Option<&Path>, table: Table) -> Result<()> {
    executor(netns)
        .apply(&Transaction::replace(table))
        .map_err(|source| Error::Nft {
            op: format!("replacing table ip {TABLE}"),
            source,
        })
}

/// Deletes the table if it exists.
pub fn remove(netns: Option<&Path>) -> Result<()> {
    executor(netns)
        .apply(&Transaction::delete_table(TABLE))
        .map_err(|source| Error::Nft {
            op: format!("deleting table ip {TABLE}"),
            source,
        })
}

fn executor(netns: Option<&Path>) -> NftCmd {
    match netns {
        Some(path) => NftCmd::in_netns(path),
        None => NftCmd::current(),
    }
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
        assert_eq!(table(&spec).full_sync_script(), golden);
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
        assert_eq!(table(&mesh_spec()).full_sync_script(), golden);
    }

    #[test]
    fn empty_spec_still_declares_the_chain() {
        let script = table(&NodeFirewallSpec::default()).full_sync_script();
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
