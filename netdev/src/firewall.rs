//! The node namespace's own nftables table: published ports (the routing mesh's, DNATed to
//! the ingress sandbox, and host-mode ones, straight to local tasks), egress masquerade, and
//! the guard: what the node forwards to its bridges, who may send it VXLAN, and no martian
//! packets to 127/8 (the `route_localnet` the gateway bridge needs would otherwise let them in).
//! Built as an nft model; every sync replaces the table's whole content in one transaction,
//! and nothing outside this table is ever read or touched.
//!
//! `sync` and `remove` block on the `nft` process: call them from `spawn_blocking`.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use routemesh_nft::{
    AddrType, BaseChain, Chain, ChainType, Collection, CtState, CtStatus, DataType, Declare,
    Element, ElementLayout, Executor, Expr, Hook, KeyDecl, MapRef, Match, NftCmd, Priority, Rule,
    Stmt, Style, Table, Transaction, Value,
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
/// Filter chain on the input hook: VXLAN from cluster nodes only, no martians to 127/8.
pub const CHAIN_INPUT: &str = "input";
/// Filter chain on the forward hook: into a bridge only replies and published-port DNAT.
pub const CHAIN_FORWARD: &str = "forward";
/// Set of the cluster nodes' advertise addresses: the only sources of VXLAN accepted.
pub const SET_VXLAN_PEERS: &str = "vxlan_peers";
/// 127.0.0.0/8: never the destination of a packet from another interface but a reply.
const LOOPBACK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
/// Route chain on the output hook: marks the VXLAN of encrypted overlays for IPsec.
pub const CHAIN_MARK_ENCRYPTED: &str = "mark_encrypted";

/// What the node's table should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFirewallSpec {
    pub masquerade: Vec<Masquerade>,
    /// The routing mesh's published ports, DNATed to the ingress sandbox.
    pub ingress: Option<IngressDnat>,
    /// Ports published in host mode, DNATed straight to this node's tasks.
    pub host_ports: Vec<HostPort>,
    /// What may reach the tasks and the node (None: no filtering at all).
    pub guard: Option<Guard>,
}

/// The node's filtering: nothing reaches a task except over its own networks, its published
/// ports, or as a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Bridges the node forwards into only replies and published-port DNAT: the gateway bridge
    /// first, then the `bridge` networks' bridges.
    pub bridges: Vec<GuardedBridge>,
    /// Subnets that exist only inside the mesh (overlays, the ingress network): the node never
    /// forwards a packet to them, whoever sends it.
    pub private_nets: Vec<Ipv4Net>,
    /// The VXLAN UDP port, accepted only from `vxlan_peers`.
    pub vxlan_port: u16,
    /// The cluster's nodes' advertise addresses.
    pub vxlan_peers: Vec<Ipv4Addr>,
    /// VNIs of encrypted overlays: their VXLAN leaves with `encrypt_mark` (which the IPsec
    /// policies match) and arrives only out of IPsec (cleartext is dropped).
    pub encrypted_vnis: Vec<u32>,
    pub encrypt_mark: u32,
}

/// A bridge in the node namespace that the guard closes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuardedBridge {
    pub ifname: String,
    /// Whether its own ports may talk to each other through the node: yes for a `bridge`
    /// network (its tasks share it; this matters where bridged traffic passes the ip hooks,
    /// `bridge-nf-call-iptables`), no for the gateway bridge (its ports are isolated too).
    pub intra: bool,
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
    if let Some(guard) = &spec.guard {
        add_guard(&mut t, guard);
    }
    t
}

/// The guard's set and its two filter chains (policy accept: they only drop what they name).
fn add_guard(t: &mut Table, guard: &Guard) {
    let mut peers = guard.vxlan_peers.clone();
    peers.sort();
    peers.dedup();
    t.collections.push(
        Collection::set(SET_VXLAN_PEERS, KeyDecl::Type(vec![DataType::Ipv4Addr])).with_elements(
            peers
                .into_iter()
                .map(|a| Element::key(vec![Value::Addr(a)]))
                .collect(),
        ),
    );
    let counted_drop = || vec![Stmt::Counter, Stmt::Drop];
    let loopback = LOOPBACK;
    let martian = || {
        vec![
            Match::Ne(Expr::Iifname, Value::Iface("lo".into())),
            Match::Eq(Expr::IpDaddr, Value::Net(loopback)),
        ]
    };
    let vxlan = || {
        vec![
            Match::Eq(Expr::L4proto, Value::Proto(Proto::Udp)),
            Match::Eq(Expr::Dport, Value::Port(guard.vxlan_port)),
        ]
    };
    let with = |mut m: Vec<Match>, extra: Match| {
        m.push(extra);
        m
    };
    let mut encrypted = guard.encrypted_vnis.clone();
    encrypted.sort();
    encrypted.dedup();
    let of_vni = |vni: u32| with(vxlan(), Match::Eq(Expr::VxlanVni, Value::Int(vni)));
    // Replies to the node's own connections to 127/8 that were DNATed out (a localhost
    // publish) come back on the bridge, already established.
    let mut input = vec![
        Rule::new(
            with(
                martian(),
                Match::Eq(Expr::CtState, Value::CtState(CtState::Established)),
            ),
            vec![Stmt::Accept],
        ),
        Rule::new(
            with(
                martian(),
                Match::Eq(Expr::CtState, Value::CtState(CtState::Related)),
            ),
            vec![Stmt::Accept],
        ),
        Rule::new(martian(), counted_drop()),
    ];
    // Before the peers' accept: an encrypted overlay's frames must come out of IPsec.
    input.extend(encrypted.iter().map(|vni| {
        Rule::new(
            with(of_vni(*vni), Match::Eq(Expr::Ipsec, Value::Presence(false))),
            counted_drop(),
        )
    }));
    input.push(Rule::new(
        with(
            vxlan(),
            Match::InSet(vec![Expr::IpSaddr], SET_VXLAN_PEERS.into()),
        ),
        vec![Stmt::Counter, Stmt::Accept],
    ));
    input.push(Rule::new(vxlan(), counted_drop()));
    if !encrypted.is_empty() {
        t.chains.push(Chain::base(
            CHAIN_MARK_ENCRYPTED,
            BaseChain::new(ChainType::Route, Hook::Output, Priority::Mangle),
            encrypted
                .iter()
                .map(|vni| Rule::new(of_vni(*vni), vec![Stmt::SetMark(guard.encrypt_mark)]))
                .collect(),
        ));
    }
    t.chains.push(Chain::base(
        CHAIN_INPUT,
        BaseChain::new(ChainType::Filter, Hook::Input, Priority::Filter),
        input,
    ));
    let mut forward = vec![
        Rule::new(
            vec![Match::Eq(
                Expr::CtState,
                Value::CtState(CtState::Established),
            )],
            vec![Stmt::Accept],
        ),
        Rule::new(
            vec![Match::Eq(Expr::CtState, Value::CtState(CtState::Related))],
            vec![Stmt::Accept],
        ),
    ];
    let mut private: Vec<Ipv4Net> = guard.private_nets.iter().map(|n| n.trunc()).collect();
    private.sort();
    private.dedup();
    for net in private {
        forward.push(Rule::new(
            vec![Match::Eq(Expr::IpDaddr, Value::Net(net))],
            counted_drop(),
        ));
    }
    let mut bridges = guard.bridges.clone();
    bridges.dedup();
    for b in &bridges {
        let oif = || Match::Eq(Expr::Oifname, Value::Iface(b.ifname.clone()));
        if b.intra {
            forward.push(Rule::new(
                vec![
                    Match::Eq(Expr::Iifname, Value::Iface(b.ifname.clone())),
                    oif(),
                ],
                vec![Stmt::Accept],
            ));
        }
        forward.push(Rule::new(
            vec![
                oif(),
                Match::Eq(Expr::CtStatus, Value::CtStatus(CtStatus::Dnat)),
            ],
            vec![Stmt::Accept],
        ));
        forward.push(Rule::new(vec![oif()], counted_drop()));
    }
    t.chains.push(Chain::base(
        CHAIN_FORWARD,
        BaseChain::new(ChainType::Filter, Hook::Forward, Priority::Filter),
        forward,
    ));
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
            guard: None,
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
    fn the_guard_closes_bridges_private_nets_vxlan_and_martians() {
        let spec = NodeFirewallSpec {
            guard: Some(Guard {
                bridges: vec![
                    GuardedBridge {
                        ifname: "rm_gwbridge".into(),
                        intra: false,
                    },
                    GuardedBridge {
                        ifname: "rmb-web".into(),
                        intra: true,
                    },
                ],
                private_nets: vec![
                    "10.255.0.7/16".parse().unwrap_or_else(|e| panic!("{e}")),
                    "10.0.0.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
                ],
                vxlan_port: 4789,
                vxlan_peers: vec![
                    "192.168.100.12".parse().unwrap_or_else(|e| panic!("{e}")),
                    "192.168.100.11".parse().unwrap_or_else(|e| panic!("{e}")),
                    "192.168.100.12".parse().unwrap_or_else(|e| panic!("{e}")),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let script = table(&spec).full_sync_script();
        let guard = script
            .split_once("\tset vxlan_peers")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no vxlan_peers set in\n{script}"));
        let golden = " {\n\
                      \t\ttype ipv4_addr\n\
                      \t\telements = { 192.168.100.11, 192.168.100.12 }\n\
                      \t}\n\
                      \tchain postrouting {\n\
                      \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                      \t}\n\
                      \tchain input {\n\
                      \t\ttype filter hook input priority filter; policy accept;\n\
                      \t\tiifname != \"lo\" ip daddr 127.0.0.0/8 ct state established accept\n\
                      \t\tiifname != \"lo\" ip daddr 127.0.0.0/8 ct state related accept\n\
                      \t\tiifname != \"lo\" ip daddr 127.0.0.0/8 counter drop\n\
                      \t\tmeta l4proto udp th dport 4789 ip saddr @vxlan_peers counter accept\n\
                      \t\tmeta l4proto udp th dport 4789 counter drop\n\
                      \t}\n\
                      \tchain forward {\n\
                      \t\ttype filter hook forward priority filter; policy accept;\n\
                      \t\tct state established accept\n\
                      \t\tct state related accept\n\
                      \t\tip daddr 10.0.0.0/24 counter drop\n\
                      \t\tip daddr 10.255.0.0/16 counter drop\n\
                      \t\toifname \"rm_gwbridge\" ct status dnat accept\n\
                      \t\toifname \"rm_gwbridge\" counter drop\n\
                      \t\tiifname \"rmb-web\" oifname \"rmb-web\" accept\n\
                      \t\toifname \"rmb-web\" ct status dnat accept\n\
                      \t\toifname \"rmb-web\" counter drop\n\
                      \t}\n\
                      }\n";
        assert_eq!(guard, golden);
    }

    #[test]
    fn encrypted_vnis_are_marked_out_and_must_come_in_through_ipsec() {
        let spec = NodeFirewallSpec {
            guard: Some(Guard {
                vxlan_port: 4789,
                encrypted_vnis: vec![4098, 4097],
                encrypt_mark: 0x726d_0e5b,
                ..Default::default()
            }),
            ..Default::default()
        };
        let script = table(&spec).full_sync_script();
        let input = script
            .split("chain input {")
            .nth(1)
            .and_then(|r| r.split("\t}").next())
            .unwrap_or_else(|| panic!("{script}"));
        let rules: Vec<&str> = input.lines().skip(2).map(str::trim).collect();
        assert_eq!(
            rules[3..],
            [
                "meta l4proto udp th dport 4789 @th,96,24 4097 meta ipsec missing counter drop",
                "meta l4proto udp th dport 4789 @th,96,24 4098 meta ipsec missing counter drop",
                "meta l4proto udp th dport 4789 ip saddr @vxlan_peers counter accept",
                "meta l4proto udp th dport 4789 counter drop",
            ]
        );
        assert!(
            script.contains(
                "\tchain mark_encrypted {\n\
             \t\ttype route hook output priority mangle; policy accept;\n\
             \t\tmeta l4proto udp th dport 4789 @th,96,24 4097 meta mark set 0x726d0e5b\n\
             \t\tmeta l4proto udp th dport 4789 @th,96,24 4098 meta mark set 0x726d0e5b\n\
             \t}\n"
            ),
            "{script}"
        );
        // The tracer reads it (and never sees VXLAN itself).
        routemesh_nft::trace::Ruleset::parse(&script).unwrap_or_else(|e| panic!("{e}"));
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
