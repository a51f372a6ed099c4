//! Packets followed across the namespaces of two nodes, through the tables exactly as they are
//! rendered for the kernel: a client outside reaching a published port on either node, a task
//! reaching a VIP, hairpin and localhost publishes, the DNS redirect, with both dataplanes.
//! No root: the tracer walks the rendered rules.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use routemesh_nft::trace::{Delivery, End, Flow, Network};

use super::*;
use crate::agent::plan::{plan, NodeContext};
use crate::config::IpvsTimeouts;
use crate::layout::RunDir;
use crate::model::*;

const CLIENT: &str = "client";
const CLIENT_ADDR: &str = "192.168.100.100";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn overlay(name: &str, subnet: &str, vni: u32) -> Network_ {
    let subnet = net(subnet);
    Network_ {
        name: name.into(),
        id: format!("id-{name}"),
        driver: Driver::Overlay,
        subnet,
        gateway: subnet.hosts().next().unwrap_or(subnet.addr()),
        vni: Some(vni),
        created_at: 0,
        ingress: name == "ingress",
        parent: None,
        encrypted: false,
    }
}

type Network_ = crate::model::Network;

fn service(name: &str, vip: &str, ports: Vec<PortConfig>) -> Service {
    Service {
        name: name.into(),
        id: format!("id-{name}"),
        replicas: 1,
        networks: vec!["app".into()],
        env: vec![],
        command: vec!["routemesh".into()],
        created_at: 0,
        updated_at: 0,
        endpoint_mode: EndpointMode::Vip,
        ports,
        vips: vec![ServiceVip {
            network: "app".into(),
            address: net(vip),
        }],
        lb_scheduler: Scheduler::Rr,
        image: None,
        user: None,
        limits: Default::default(),
    }
}

fn task(name: &str, node: &str, nets: &[(&str, &str)], gw: &str) -> Task {
    let (service, slot) = name.split_once('.').unwrap_or((name, "1"));
    Task {
        name: name.into(),
        service: service.into(),
        slot: slot.parse().unwrap_or(1),
        node: node.into(),
        attachments: nets
            .iter()
            .map(|(n, a)| TaskAttachment {
                network: n.to_string(),
                address: net(a),
            })
            .collect(),
        gateway_address: net(gw),
        created_at: 0,
        desired: DesiredState::Running,
    }
}

/// Two nodes; `web` publishes 8080:80 with web.1 on n1 and web.2 on n2; `client` runs on n1.
fn cluster() -> ClusterState {
    let mut st = ClusterState::default();
    st.networks
        .insert("app".into(), overlay("app", "10.0.1.0/24", 4097));
    st.networks
        .insert("ingress".into(), overlay("ingress", "10.255.0.0/16", 4096));
    for (node, addr) in [("n1", "192.168.100.11"), ("n2", "192.168.100.12")] {
        st.nodes.insert(
            node.into(),
            Node {
                name: node.into(),
                advertise_addr: Some(ip(addr)),
                state: NodeState::Ready,
                api_socket: String::new(),
                run_dir: String::new(),
                updated_at: 0,
                images: vec![],
            },
        );
    }
    for (n, node, a) in [
        ("app", "n1", "10.0.1.2/24"),
        ("app", "n2", "10.0.1.4/24"),
        ("ingress", "n1", "10.255.0.2/16"),
        ("ingress", "n2", "10.255.0.3/16"),
    ] {
        st.node_addrs.insert(
            (n.into(), node.into()),
            NodeAddress {
                network: n.into(),
                node: node.into(),
                address: net(a),
            },
        );
    }
    let publish = PortConfig {
        published: 8080,
        target: 80,
        proto: Proto::Tcp,
        mode: PublishMode::Ingress,
    };
    st.services.insert(
        "web".into(),
        Service {
            replicas: 2,
            ..service("web", "10.0.1.3/24", vec![publish])
        },
    );
    st.services
        .insert("client".into(), service("client", "10.0.1.5/24", vec![]));
    let tasks = [
        task(
            "web.1",
            "n1",
            &[("app", "10.0.1.10/24"), ("ingress", "10.255.0.10/16")],
            "172.18.0.3/16",
        ),
        task(
            "web.2",
            "n2",
            &[("app", "10.0.1.11/24"), ("ingress", "10.255.0.11/16")],
            "172.18.0.3/16",
        ),
        task(
            "client.1",
            "n1",
            &[("app", "10.0.1.20/24")],
            "172.18.0.4/16",
        ),
    ];
    for t in tasks {
        st.statuses.insert(
            t.name.clone(),
            TaskStatus {
                state: TaskState::Running,
                pid: Some(1),
                message: String::new(),
                restarts: 0,
                ever_ran: true,
                updated_at: 0,
            },
        );
        st.tasks.insert(t.name.clone(), t);
    }
    st
}

fn ctx(node: &str, addr: &str) -> NodeContext {
    NodeContext {
        node: node.into(),
        run: RunDir::new(format!("/run/rm-{node}")),
        advertise_addr: Some(ip(addr)),
        gwbridge_subnet: net("172.18.0.0/16"),
        task_path: "/bin".into(),
    }
}

/// Both nodes and an outside client on the underlay.
fn mesh(kind: Kind) -> Network {
    let st = cluster();
    let plans = [
        (
            "n1",
            plan(&st, &ctx("n1", "192.168.100.11")),
            "192.168.100.11/24",
        ),
        (
            "n2",
            plan(&st, &ctx("n2", "192.168.100.12")),
            "192.168.100.12/24",
        ),
    ];
    let views: Vec<NodeView<'_>> = plans
        .iter()
        .map(|(node, plan, underlay)| NodeView {
            node,
            plan,
            underlay: net(underlay),
        })
        .collect();
    let mut network = network(&views, kind).unwrap_or_else(|e| panic!("{e}"));
    let client = network.add(CLIENT, "outside", Default::default());
    client.ifaces.push(routemesh_nft::trace::net::Iface {
        name: "eth0".into(),
        addrs: vec![net(&format!("{CLIENT_ADDR}/24"))],
        segment: UNDERLAY.into(),
    });
    network
}

fn tcp(src: &str, dst: &str, dport: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        proto: Proto::Tcp,
        dport,
    }
}

fn send(network: &Network, from: &str, flow: Flow) -> Vec<Delivery> {
    network
        .send(from, flow)
        .unwrap_or_else(|e| panic!("tracing {flow:?} from {from}: {e}"))
}

/// Where the packets end, with the share of connections that go there.
fn ends(deliveries: &[Delivery]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for d in deliveries {
        let key = match &d.end {
            End::Delivered(ns) => ns.clone(),
            other => format!("{other:?}"),
        };
        *out.entry(key).or_insert(0.0) += d.share;
    }
    out
}

fn both_web_tasks() -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("n1/task-web.1".to_string(), 0.5),
        ("n2/task-web.2".to_string(), 0.5),
    ])
}

fn nftables() -> Kind {
    Kind::Nftables
}

fn ipvs() -> Kind {
    Kind::Ipvs(IpvsTimeouts::default())
}

#[test]
fn outside_client_reaches_a_task_on_any_node_through_either_node() {
    for kind in [nftables(), ipvs()] {
        let network = mesh(kind);
        for (node, node_addr, sbox_addr) in [
            ("n1", "192.168.100.11", "10.255.0.2"),
            ("n2", "192.168.100.12", "10.255.0.3"),
        ] {
            let deliveries = send(&network, CLIENT, tcp(CLIENT_ADDR, node_addr, 8080));
            assert_eq!(ends(&deliveries), both_web_tasks(), "{kind:?} via {node}");
            for d in &deliveries {
                // From the client, node DNAT to its ingress sandbox, then the load balancer
                // there.
                let hops: Vec<&str> = d.hops.iter().map(|h| h.ns.as_str()).collect();
                let sbox = format!("{node}/ingress_sbox");
                assert_eq!(hops[..3], [CLIENT, node, &sbox], "{hops:?}");
                assert_eq!(d.hops[1].dnat, Some((ip("172.18.0.2"), 8080)), "{kind:?}");
                // The task sees the ingress sandbox's address and its target port.
                assert_eq!(d.src, ip(sbox_addr), "{kind:?} via {node}");
                assert_eq!(d.dport, 80, "{kind:?}");
            }
        }
    }
}

#[test]
fn a_task_reaches_a_vip_on_its_own_nodes_load_balancer() {
    for kind in [nftables(), ipvs()] {
        let network = mesh(kind);
        let deliveries = send(
            &network,
            "n1/task-client.1",
            tcp("10.0.1.20", "10.0.1.3", 80),
        );
        assert_eq!(ends(&deliveries), both_web_tasks(), "{kind:?}");
        for d in &deliveries {
            assert_eq!(d.hops[1].ns, "n1/ov-app", "{kind:?}");
            // SNAT to n1's own address on the overlay, so replies come back through it.
            assert_eq!(d.src, ip("10.0.1.2"), "{kind:?}");
            assert_eq!((d.dport, d.dst.octets()[..3] == [10, 0, 1]), (80, true));
        }
    }
}

#[test]
fn hairpin_and_localhost_publishes_reach_the_tasks() {
    for kind in [nftables(), ipvs()] {
        let network = mesh(kind);
        // A task calling the published port on its node's gateway address.
        let hairpin = send(
            &network,
            "n1/task-client.1",
            tcp("172.18.0.4", "172.18.0.1", 8080),
        );
        assert_eq!(ends(&hairpin), both_web_tasks(), "hairpin {kind:?}");
        // Masqueraded on the node so replies come back through it.
        assert_eq!(hairpin[0].hops[1].snat, Some(ip("172.18.0.1")), "{kind:?}");
        // A process on the node itself, to 127.0.0.1.
        let local = send(&network, "n1", tcp("127.0.0.1", "127.0.0.1", 8080));
        assert_eq!(ends(&local), both_web_tasks(), "localhost {kind:?}");
        assert_eq!(local[0].hops[0].snat, Some(ip("172.18.0.1")), "{kind:?}");
    }
}

#[test]
fn ipvs_path_marks_at_the_load_balancer() {
    let network = mesh(ipvs());
    let deliveries = send(&network, CLIENT, tcp(CLIENT_ADDR, "192.168.100.11", 8080));
    let sbox = &deliveries[0].hops[2];
    assert_eq!(sbox.ns, "n1/ingress_sbox");
    assert!(sbox.ipvs.is_some_and(|mark| mark >= 0x100), "{sbox:?}");
    assert!(sbox.chains.iter().any(|c| c == "set_mark"), "{sbox:?}");
}

#[test]
fn other_ports_stay_on_the_node_and_dns_is_redirected() {
    let network = mesh(nftables());
    let other = send(&network, CLIENT, tcp(CLIENT_ADDR, "192.168.100.11", 9999));
    assert_eq!(ends(&other), BTreeMap::from([("n1".to_string(), 1.0)]));
    let query = Flow {
        proto: Proto::Udp,
        ..tcp("127.0.0.1", "127.0.0.11", 53)
    };
    let dns = send(&network, "n1/task-client.1", query);
    assert_eq!(
        ends(&dns),
        BTreeMap::from([("n1/task-client.1".to_string(), 1.0)])
    );
    assert_eq!(dns[0].dport, TRACE_DNS_PORTS.0);
}

#[test]
fn the_node_forwards_nothing_to_a_task_or_an_overlay_that_is_not_published() {
    let mut network = mesh(nftables());
    // An outside host that routes everything through n1 (as one on the underlay can).
    if let Some(client) = network.namespaces.get_mut(CLIENT) {
        client.default_via = Some(ip("192.168.100.11"));
    }
    let web1_gw = "172.18.0.3";
    for (dst, port) in [(web1_gw, 80), ("172.18.0.2", 8080), ("10.0.1.2", 80)] {
        let d = send(&network, CLIENT, tcp(CLIENT_ADDR, dst, port));
        assert_eq!(
            ends(&d),
            BTreeMap::from([("Dropped(\"n1\")".to_string(), 1.0)]),
            "{dst}:{port}"
        );
    }
    // The published port still reaches both tasks.
    let published = send(&network, CLIENT, tcp(CLIENT_ADDR, "192.168.100.11", 8080));
    assert_eq!(ends(&published), both_web_tasks());
}
