//! What the embedded DNS answers, as a pure function of the cluster state: the name table's
//! input, and for each local sandbox the networks it may see (its own, in interface order;
//! never the ingress network, which only carries published-port traffic).

use std::collections::BTreeMap;

use routemesh_dns::{EndpointMode as DnsMode, Input, NetInput, ServiceInput, TaskInput};

use crate::model::{ClusterState, DesiredState, EndpointMode, Proto, TaskState};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub input: Input,
    /// Keyed by local task: the networks its queries are answered from.
    pub queriers: BTreeMap<String, Vec<String>>,
}

fn visible(st: &ClusterState, network: &str) -> bool {
    st.networks.get(network).is_some_and(|n| !n.ingress)
}

pub fn plan_dns(st: &ClusterState, node: &str) -> DnsPlan {
    let networks = st
        .networks
        .values()
        .filter(|n| !n.ingress)
        .map(|n| NetInput { id: n.name.clone() })
        .collect();
    let services = st
        .services
        .values()
        .map(|s| {
            let mut ports: Vec<(u16, Proto)> =
                s.ports.iter().map(|p| (p.target, p.proto)).collect();
            ports.sort();
            ports.dedup();
            ServiceInput {
                name: s.name.clone(),
                // A service with no VIP (dnsrr, or only on bridge networks) is answered with
                // its tasks' addresses.
                mode: match s.endpoint_mode {
                    EndpointMode::Vip if !s.vips.is_empty() => DnsMode::Vip,
                    _ => DnsMode::Dnsrr,
                },
                vips: s
                    .vips
                    .iter()
                    .filter(|v| visible(st, &v.network))
                    .map(|v| (v.network.clone(), v.address.addr()))
                    .collect(),
                ports,
            }
        })
        .collect();
    let tasks = st
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running)
        .map(|t| TaskInput {
            name: t.name.clone(),
            service: t.service.clone(),
            addrs: t
                .attachments
                .iter()
                .filter(|a| visible(st, &a.network))
                .map(|a| (a.network.clone(), a.address.addr()))
                .collect(),
            running: st
                .statuses
                .get(&t.name)
                .is_some_and(|s| s.state == TaskState::Running),
        })
        .collect();
    let queriers = st
        .tasks
        .values()
        .filter(|t| t.node == node && t.desired == DesiredState::Running)
        .map(|t| {
            let nets = t
                .attachments
                .iter()
                .filter(|a| visible(st, &a.network))
                .map(|a| a.network.clone())
                .collect();
            (t.name.clone(), nets)
        })
        .collect();
    DnsPlan {
        input: Input {
            networks,
            services,
            tasks,
        },
        queriers,
    }
}
