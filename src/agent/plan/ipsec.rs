//! Planning the encrypted overlays on one node, pure like `plan`: with every other ready node,
//! one ESP security association out (under the keyring's primary key), one in per key of the
//! keyring, and one policy sending this node's marked VXLAN to that node through ESP.

use std::net::Ipv4Addr;

use routemesh_netdev::xfrm::{EspSa, IpsecSpec, VxlanPolicy};

use super::{fnv32, NodeContext};
use crate::model::{ClusterState, IpsecKey, NodeState};

/// The mark the node table puts on encrypted overlays' VXLAN; the IPsec policies match it.
pub const ENCRYPT_MARK: u32 = 0x726d_0e5b;

/// The VNIs of the encrypted overlays.
pub fn encrypted_vnis(st: &ClusterState) -> Vec<u32> {
    st.networks
        .values()
        .filter(|n| n.encrypted)
        .filter_map(|n| n.vni)
        .collect()
}

/// The SPI of the SA from `src` to `dst` under key `tag`: the same on both ends, different
/// per direction and key, never in the reserved range 0-255.
pub fn spi(tag: u32, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
    let h = fnv32(&format!("{tag}/{src}/{dst}"));
    if h < 0x100 {
        h | 0x100
    } else {
        h
    }
}

/// The 20 key bytes of `key` (40 hex digits), or None when the record is malformed.
pub fn key_bytes(key: &IpsecKey) -> Option<[u8; 20]> {
    let hex = key.key.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

pub fn plan_ipsec(st: &ClusterState, ctx: &NodeContext) -> IpsecSpec {
    let (Some(local), Some(ring)) = (ctx.advertise_addr, st.keyring.as_ref()) else {
        return IpsecSpec::default();
    };
    if !st.any_encrypted() {
        return IpsecSpec::default();
    }
    let keys: Vec<(u32, [u8; 20])> = ring
        .keys
        .iter()
        .filter_map(|k| key_bytes(k).map(|b| (k.tag, b)))
        .collect();
    let primary = keys.iter().find(|(tag, _)| *tag == ring.primary);
    let mut spec = IpsecSpec::default();
    let peers = st
        .nodes
        .values()
        .filter(|n| n.name != ctx.node && n.state == NodeState::Ready)
        .filter_map(|n| n.advertise_addr)
        .filter(|a| *a != local);
    for peer in peers {
        if let Some((tag, key)) = primary {
            spec.sas.push(EspSa {
                src: local,
                dst: peer,
                spi: spi(*tag, local, peer),
                key: *key,
            });
            spec.policies.push(VxlanPolicy {
                src: local,
                dst: peer,
                mark: ENCRYPT_MARK,
            });
        }
        for (tag, key) in &keys {
            spec.sas.push(EspSa {
                src: peer,
                dst: local,
                spi: spi(*tag, peer, local),
                key: *key,
            });
        }
    }
    spec.sas.sort();
    spec.sas.dedup();
    spec.policies.sort();
    spec.policies.dedup();
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, ready: bool) -> crate::model::Node {
        crate::model::Node {
            name: name.into(),
            advertise_addr: Some(addr.parse().unwrap()),
            state: if ready {
                NodeState::Ready
            } else {
                NodeState::Down
            },
            api_socket: String::new(),
            run_dir: String::new(),
            updated_at: 0,
            images: vec![],
        }
    }

    fn key(tag: u32, byte: &str) -> IpsecKey {
        IpsecKey {
            tag,
            key: byte.repeat(20),
        }
    }

    #[test]
    fn sends_under_the_primary_key_and_accepts_every_key_from_each_ready_peer() {
        let mut st = ClusterState::default();
        for (n, a, ready) in [
            ("n1", "192.168.50.1", true),
            ("n2", "192.168.50.2", true),
            ("n3", "192.168.50.3", false),
        ] {
            st.nodes.insert(n.into(), node(n, a, ready));
        }
        let ctx = NodeContext {
            node: "n1".into(),
            run: crate::layout::RunDir::new("/run/rm"),
            advertise_addr: Some("192.168.50.1".parse().unwrap()),
            gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
            task_path: "/bin".into(),
        };
        st.keyring = Some(crate::model::Keyring {
            keys: vec![key(1, "11"), key(2, "22")],
            primary: 2,
            phase: crate::model::RotationPhase::Switched,
            phase_at: 0,
        });
        assert_eq!(
            plan_ipsec(&st, &ctx),
            IpsecSpec::default(),
            "no encrypted overlay"
        );
        st.networks.insert(
            "sec".into(),
            crate::model::Network {
                name: "sec".into(),
                id: "id".into(),
                driver: crate::model::Driver::Overlay,
                subnet: "10.0.9.0/24".parse().unwrap(),
                gateway: "10.0.9.1".parse().unwrap(),
                vni: Some(4100),
                created_at: 0,
                ingress: false,
                parent: None,
                encrypted: true,
            },
        );
        let spec = plan_ipsec(&st, &ctx);
        let (me, n2): (Ipv4Addr, Ipv4Addr) = (
            "192.168.50.1".parse().unwrap(),
            "192.168.50.2".parse().unwrap(),
        );
        let out: Vec<_> = spec.sas.iter().filter(|s| s.src == me).collect();
        assert_eq!(out.len(), 1, "one SA out to n2 (n3 is down): {spec:?}");
        assert_eq!(
            (out[0].dst, out[0].spi, out[0].key),
            (n2, spi(2, me, n2), [0x22; 20])
        );
        let inbound: Vec<_> = spec.sas.iter().filter(|s| s.dst == me).collect();
        assert_eq!(inbound.len(), 2, "n2 may send under either key");
        assert!(inbound
            .iter()
            .any(|s| s.spi == spi(1, n2, me) && s.key == [0x11; 20]));
        assert_eq!(
            spec.policies,
            vec![VxlanPolicy {
                src: me,
                dst: n2,
                mark: ENCRYPT_MARK
            }]
        );
        assert_eq!(encrypted_vnis(&st), vec![4100]);
    }

    #[test]
    fn spis_differ_per_direction_and_key_and_keys_parse() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_ne!(spi(1, a, b), spi(1, b, a));
        assert_ne!(spi(1, a, b), spi(2, a, b));
        assert!(spi(1, a, b) >= 0x100);
        let k = IpsecKey {
            tag: 3,
            key: "0123456789abcdef0123456789ABCDEF01234567".into(),
        };
        assert_eq!(key_bytes(&k).map(|b| b[19]), Some(0x67));
        let bad = IpsecKey {
            tag: 3,
            key: "zz".repeat(20),
        };
        assert_eq!(key_bytes(&bad), None);
    }
}
