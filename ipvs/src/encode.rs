//! Requests encoded as `net/netfilter/ipvs/ip_vs_ctl.c` parses them: `ip_vs_genl_parse_service`
//! and `ip_vs_genl_parse_dest` against `ip_vs_svc_policy` / `ip_vs_dest_policy`.

use std::fmt::Debug;
use std::net::IpAddr;

use netlink_packet_core::{Emitable, NetlinkMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};

use crate::consts::*;
use crate::message::{Attr, IpvsRequest, Value};
use crate::types::{Destination, Family, Service, ServiceKey, Timeouts};

/// A whole netlink datagram: `nlmsghdr`, `genlmsghdr`, then the family payload.
pub(crate) fn frame<F>(family_id: u16, seq: u32, flags: u16, payload: F) -> Vec<u8>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family_id);
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = flags;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// A dump ends with `NLMSG_DONE`; anything else asks for an acknowledgement, so that success
/// is confirmed and not just assumed.
pub(crate) fn flags(dump: bool) -> u16 {
    if dump {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    }
}

fn request(cmd: u8, attrs: Vec<Attr>) -> IpvsRequest {
    IpvsRequest { cmd, attrs }
}

/// `CTRL_CMD_GETFAMILY` for "IPVS", to the generic netlink controller.
pub(crate) fn get_family() -> GenlCtrl {
    GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_string())],
    }
}

pub(crate) fn new_service(service: &Service) -> IpvsRequest {
    request(IPVS_CMD_NEW_SERVICE, vec![service_attr(service)])
}

pub(crate) fn set_service(service: &Service) -> IpvsRequest {
    request(IPVS_CMD_SET_SERVICE, vec![service_attr(service)])
}

pub(crate) fn del_service(key: &ServiceKey) -> IpvsRequest {
    request(IPVS_CMD_DEL_SERVICE, vec![service_key_attr(key)])
}

/// With a key: that one service. Without: all services (sent as a dump).
pub(crate) fn get_service(key: Option<&ServiceKey>) -> IpvsRequest {
    request(
        IPVS_CMD_GET_SERVICE,
        key.map(service_key_attr).into_iter().collect(),
    )
}

pub(crate) fn new_dest(key: &ServiceKey, dest: &Destination) -> IpvsRequest {
    request(
        IPVS_CMD_NEW_DEST,
        vec![service_key_attr(key), dest_attr(dest)],
    )
}

pub(crate) fn set_dest(key: &ServiceKey, dest: &Destination) -> IpvsRequest {
    request(
        IPVS_CMD_SET_DEST,
        vec![service_key_attr(key), dest_attr(dest)],
    )
}

pub(crate) fn del_dest(key: &ServiceKey, addr: &IpAddr, port: u16) -> IpvsRequest {
    request(
        IPVS_CMD_DEL_DEST,
        vec![service_key_attr(key), dest_key_attr(addr, port)],
    )
}

/// Sent as a dump: the kernel lists the destinations of the named service.
pub(crate) fn get_dests(key: &ServiceKey) -> IpvsRequest {
    request(IPVS_CMD_GET_DEST, vec![service_key_attr(key)])
}

pub(crate) fn flush() -> IpvsRequest {
    request(IPVS_CMD_FLUSH, vec![])
}

pub(crate) fn get_config() -> IpvsRequest {
    request(IPVS_CMD_GET_CONFIG, vec![])
}

pub(crate) fn set_config(timeouts: &Timeouts) -> IpvsRequest {
    request(IPVS_CMD_SET_CONFIG, timeout_attrs(timeouts))
}

pub(crate) fn get_info() -> IpvsRequest {
    request(IPVS_CMD_GET_INFO, vec![])
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first 4, in network order.
pub(crate) fn inet_addr(addr: &IpAddr) -> Vec<u8> {
    let mut bytes = vec![0u8; INET_ADDR_LEN];
    match addr {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
    }
    bytes
}

/// The attributes that find a service: the kernel needs `AF` plus either `FWMARK` or all of
/// `PROTOCOL`, `ADDR` and `PORT`.
fn service_key_attrs(key: &ServiceKey) -> Vec<Attr> {
    let mut attrs = vec![Attr::new(IPVS_SVC_ATTR_AF, Value::U16(key.family().raw()))];
    match key {
        ServiceKey::Fwmark { mark, .. } => {
            attrs.push(Attr::new(IPVS_SVC_ATTR_FWMARK, Value::U32(*mark)));
        }
        ServiceKey::Addr { addr, port, proto } => {
            attrs.push(Attr::new(
                IPVS_SVC_ATTR_PROTOCOL,
                Value::U16(u16::from(proto.number())),
            ));
            attrs.push(Attr::new(IPVS_SVC_ATTR_ADDR, Value::Bytes(inet_addr(addr))));
            attrs.push(Attr::new(IPVS_SVC_ATTR_PORT, Value::Be16(*port)));
        }
    }
    attrs
}

/// `IPVS_CMD_ATTR_SERVICE` naming a service (for delete, and for destination commands).
fn service_key_attr(key: &ServiceKey) -> Attr {
    Attr::new(IPVS_CMD_ATTR_SERVICE, Value::Nested(service_key_attrs(key)))
}

/// `IPVS_CMD_ATTR_SERVICE` for new/set: the kernel's `full_entry` also requires
/// `SCHED_NAME`, `FLAGS`, `TIMEOUT` and `NETMASK`.
fn service_attr(service: &Service) -> Attr {
    let mut attrs = service_key_attrs(&service.key);
    // struct ip_vs_flags { __u32 flags; __u32 mask; }: a full mask makes these flags the
    // service's flags, instead of merging with what an existing service has.
    let mut flags = Vec::with_capacity(8);
    flags.extend_from_slice(&service.flags.0.to_ne_bytes());
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    attrs.extend([
        Attr::new(
            IPVS_SVC_ATTR_SCHED_NAME,
            Value::CString(service.scheduler.name().to_string()),
        ),
        Attr::new(IPVS_SVC_ATTR_FLAGS, Value::Bytes(flags)),
        Attr::new(IPVS_SVC_ATTR_TIMEOUT, Value::U32(service.timeout)),
        // Read with nla_get_be32 but never byte-swapped: 0xffffffff for IPv4 is the same
        // either way, and IPv6 wants the prefix length as a plain number.
        Attr::new(IPVS_SVC_ATTR_NETMASK, Value::U32(service.netmask)),
    ]);
    Attr::new(IPVS_CMD_ATTR_SERVICE, Value::Nested(attrs))
}

fn dest_key_attrs(addr: &IpAddr, port: u16) -> Vec<Attr> {
    vec![
        Attr::new(IPVS_DEST_ATTR_ADDR, Value::Bytes(inet_addr(addr))),
        Attr::new(IPVS_DEST_ATTR_PORT, Value::Be16(port)),
        Attr::new(
            IPVS_DEST_ATTR_ADDR_FAMILY,
            Value::U16(Family::of(addr).raw()),
        ),
    ]
}

/// `IPVS_CMD_ATTR_DEST` naming a destination (for delete).
fn dest_key_attr(addr: &IpAddr, port: u16) -> Attr {
    Attr::new(
        IPVS_CMD_ATTR_DEST,
        Value::Nested(dest_key_attrs(addr, port)),
    )
}

/// `IPVS_CMD_ATTR_DEST` for new/set: `full_entry` requires `FWD_METHOD`, `WEIGHT`,
/// `U_THRESH` and `L_THRESH`.
fn dest_attr(dest: &Destination) -> Attr {
    let mut attrs = dest_key_attrs(&dest.addr, dest.port);
    attrs.extend([
        Attr::new(IPVS_DEST_ATTR_FWD_METHOD, Value::U32(dest.fwd.raw())),
        Attr::new(IPVS_DEST_ATTR_WEIGHT, Value::U32(dest.weight)),
        Attr::new(IPVS_DEST_ATTR_U_THRESH, Value::U32(dest.upper_threshold)),
        Attr::new(IPVS_DEST_ATTR_L_THRESH, Value::U32(dest.lower_threshold)),
    ]);
    Attr::new(IPVS_CMD_ATTR_DEST, Value::Nested(attrs))
}

fn timeout_attrs(timeouts: &Timeouts) -> Vec<Attr> {
    vec![
        Attr::new(IPVS_CMD_ATTR_TIMEOUT_TCP, Value::U32(timeouts.tcp)),
        Attr::new(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, Value::U32(timeouts.tcp_fin)),
        Attr::new(IPVS_CMD_ATTR_TIMEOUT_UDP, Value::U32(timeouts.udp)),
    ]
}
