//! Requests compared with golden bytes.
//!
//! Every request starts with
//!   struct nlmsghdr   { u32 len; u16 type = family id; u16 flags; u32 seq; u32 pid = 0 }
//!   struct genlmsghdr { u8 cmd; u8 version = 1; u16 reserved = 0 }
//! followed by attributes
//!   struct nlattr     { u16 len (header + value, without padding); u16 type }
//! whose values are padded to 4 bytes. Nested attributes carry NLA_F_NESTED (0x8000).

use std::net::IpAddr;

use super::FAMILY;
use crate::encode::{self, frame};
use crate::types::*;

const ACK: u16 = 0x0005; // NLM_F_REQUEST | NLM_F_ACK
const DUMP: u16 = 0x0301; // NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH

fn fwmark260() -> ServiceKey {
    ServiceKey::Fwmark {
        mark: 260,
        family: Family::Inet,
    }
}

fn tcp_v4() -> ServiceKey {
    ServiceKey::Addr {
        addr: "10.1.0.1".parse().unwrap(),
        port: 8080,
        proto: Proto::Tcp,
    }
}

fn udp_v6() -> ServiceKey {
    ServiceKey::Addr {
        addr: "fd00::1".parse().unwrap(),
        port: 53,
        proto: Proto::Udp,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn flags_follow_the_request_kind() {
    assert_eq!(encode::flags(false), ACK);
    assert_eq!(encode::flags(true), DUMP);
}

#[test]
fn new_service_fwmark_v4() {
    let service = Service::new(fwmark260(), Scheduler::Rr);
    #[rustfmt::skip]
    let golden: &[u8] = &[
        76, 0, 0, 0,            // nlmsg_len 76
        0x24, 0,                // nlmsg_type: the IPVS family id
        5, 0,                   // NLM_F_REQUEST | NLM_F_ACK
        1, 0, 0, 0,             // seq 1
        0, 0, 0, 0,             // pid 0
        1, 1, 0, 0,             // IPVS_CMD_NEW_SERVICE, version 1
        56, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, 4 + 52
        6, 0, 1, 0, 2, 0, 0, 0, //   IPVS_SVC_ATTR_AF: u16 AF_INET (2), 2 bytes padding
        8, 0, 5, 0, 0x04, 0x01, 0, 0, //   IPVS_SVC_ATTR_FWMARK: u32 260 = 0x104, host order
        7, 0, 6, 0, b'r', b'r', 0, 0, //   IPVS_SVC_ATTR_SCHED_NAME: "rr\0", 1 byte padding
        12, 0, 7, 0,            //   IPVS_SVC_ATTR_FLAGS: struct ip_vs_flags
        0, 0, 0, 0,             //     flags 0
        0xff, 0xff, 0xff, 0xff, //     mask ~0: these flags replace the service's
        8, 0, 8, 0, 0, 0, 0, 0, //   IPVS_SVC_ATTR_TIMEOUT: u32 0
        8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff, // IPVS_SVC_ATTR_NETMASK: 0xffffffff for IPv4
    ];
    assert_eq!(frame(FAMILY, 1, ACK, encode::new_service(&service)), golden);
}

#[test]
fn new_service_addr_v4() {
    let service = Service::new(tcp_v4(), Scheduler::Wrr);
    #[rustfmt::skip]
    let golden: &[u8] = &[
        104, 0, 0, 0, 0x24, 0, 5, 0, 2, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 2
        1, 1, 0, 0,             // IPVS_CMD_NEW_SERVICE
        84, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE, nested, 4 + 80
        6, 0, 1, 0, 2, 0, 0, 0, //   AF: AF_INET
        6, 0, 2, 0, 6, 0, 0, 0, //   IPVS_SVC_ATTR_PROTOCOL: u16 IPPROTO_TCP (6)
        20, 0, 3, 0,            //   IPVS_SVC_ATTR_ADDR: union nf_inet_addr, 16 bytes
        10, 1, 0, 1,            //     IPv4 in the first 4 bytes
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 4, 0, 0x1f, 0x90, 0, 0, // IPVS_SVC_ATTR_PORT: 8080 = 0x1f90, network order
        8, 0, 6, 0, b'w', b'r', b'r', 0, // SCHED_NAME "wrr\0"
        12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // FLAGS {0, ~0}
        8, 0, 8, 0, 0, 0, 0, 0, //   TIMEOUT 0
        8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff, // NETMASK
    ];
    assert_eq!(frame(FAMILY, 2, ACK, encode::new_service(&service)), golden);
}

#[test]
fn new_service_addr_v6_persistent() {
    let mut service = Service::new(udp_v6(), Scheduler::Sh);
    service.flags = ServiceFlags::PERSISTENT;
    service.timeout = 300;
    service.netmask = 64;
    #[rustfmt::skip]
    let golden: &[u8] = &[
        104, 0, 0, 0, 0x24, 0, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 3
        1, 1, 0, 0,             // IPVS_CMD_NEW_SERVICE
        84, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE, nested
        6, 0, 1, 0, 10, 0, 0, 0, //  AF: AF_INET6 (10)
        6, 0, 2, 0, 17, 0, 0, 0, //  PROTOCOL: IPPROTO_UDP (17)
        20, 0, 3, 0,            //   ADDR fd00::1
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        6, 0, 4, 0, 0, 53, 0, 0, //  PORT 53, network order
        7, 0, 6, 0, b's', b'h', 0, 0, // SCHED_NAME "sh\0"
        12, 0, 7, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // FLAGS {IP_VS_SVC_F_PERSISTENT, ~0}
        8, 0, 8, 0, 0x2c, 0x01, 0, 0, // TIMEOUT 300 = 0x12c, host order
        8, 0, 9, 0, 64, 0, 0, 0, //  NETMASK: prefix length 64 for IPv6
    ];
    assert_eq!(frame(FAMILY, 3, ACK, encode::new_service(&service)), golden);
}

#[test]
fn set_service_uses_set_command() {
    let service = Service::new(fwmark260(), Scheduler::Mh);
    let bytes = frame(FAMILY, 4, ACK, encode::set_service(&service));
    assert_eq!(bytes[16], 2, "IPVS_CMD_SET_SERVICE");
    // "mh\0" as the scheduler name, right after AF and FWMARK.
    assert_eq!(&bytes[40..48], &[7, 0, 6, 0, b'm', b'h', 0, 0]);
}

#[test]
fn del_service_fwmark_v6_sends_only_the_key() {
    let key = ServiceKey::Fwmark {
        mark: 7,
        family: Family::Inet6,
    };
    #[rustfmt::skip]
    let golden: &[u8] = &[
        40, 0, 0, 0, 0x24, 0, 5, 0, 5, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 5
        3, 1, 0, 0,             // IPVS_CMD_DEL_SERVICE
        20, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE, nested
        6, 0, 1, 0, 10, 0, 0, 0, //  AF_INET6
        8, 0, 5, 0, 7, 0, 0, 0, //   FWMARK 7
    ];
    assert_eq!(frame(FAMILY, 5, ACK, encode::del_service(&key)), golden);
}

#[test]
fn new_dest_fwmark_v4_masq() {
    let dest = Destination::new(ip("10.0.0.5"), 80);
    #[rustfmt::skip]
    let golden: &[u8] = &[
        112, 0, 0, 0, 0x24, 0, 5, 0, 6, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 6
        5, 1, 0, 0,             // IPVS_CMD_NEW_DEST
        20, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE, nested: the key only
        6, 0, 1, 0, 2, 0, 0, 0, //   AF_INET
        8, 0, 5, 0, 0x04, 0x01, 0, 0, // FWMARK 260
        72, 0, 0x02, 0x80,      // IPVS_CMD_ATTR_DEST, nested, 4 + 68
        20, 0, 1, 0,            //   IPVS_DEST_ATTR_ADDR 10.0.0.5 in 16 bytes
        10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 2, 0, 0, 80, 0, 0, //  IPVS_DEST_ATTR_PORT 80, network order
        6, 0, 11, 0, 2, 0, 0, 0, //  IPVS_DEST_ATTR_ADDR_FAMILY AF_INET
        8, 0, 3, 0, 0, 0, 0, 0, //   IPVS_DEST_ATTR_FWD_METHOD IP_VS_CONN_F_MASQ (0)
        8, 0, 4, 0, 1, 0, 0, 0, //   IPVS_DEST_ATTR_WEIGHT 1
        8, 0, 5, 0, 0, 0, 0, 0, //   IPVS_DEST_ATTR_U_THRESH 0
        8, 0, 6, 0, 0, 0, 0, 0, //   IPVS_DEST_ATTR_L_THRESH 0
    ];
    assert_eq!(
        frame(FAMILY, 6, ACK, encode::new_dest(&fwmark260(), &dest)),
        golden
    );
}

#[test]
fn set_dest_addr_v4_weight_and_thresholds() {
    let dest = Destination {
        addr: ip("10.0.0.7"),
        port: 8080,
        weight: 0,
        fwd: Forwarding::Masq,
        upper_threshold: 100,
        lower_threshold: 10,
    };
    #[rustfmt::skip]
    let golden: &[u8] = &[
        140, 0, 0, 0, 0x24, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 7
        6, 1, 0, 0,             // IPVS_CMD_SET_DEST
        48, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE, nested: TCP 10.1.0.1:8080
        6, 0, 1, 0, 2, 0, 0, 0,
        6, 0, 2, 0, 6, 0, 0, 0,
        20, 0, 3, 0, 10, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 4, 0, 0x1f, 0x90, 0, 0,
        72, 0, 0x02, 0x80,      // IPVS_CMD_ATTR_DEST, nested
        20, 0, 1, 0, 10, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR
        6, 0, 2, 0, 0x1f, 0x90, 0, 0, // PORT 8080
        6, 0, 11, 0, 2, 0, 0, 0, //  ADDR_FAMILY
        8, 0, 3, 0, 0, 0, 0, 0, //   FWD_METHOD masq
        8, 0, 4, 0, 0, 0, 0, 0, //   WEIGHT 0: drain
        8, 0, 5, 0, 100, 0, 0, 0, // U_THRESH 100
        8, 0, 6, 0, 10, 0, 0, 0, //  L_THRESH 10
    ];
    assert_eq!(
        frame(FAMILY, 7, ACK, encode::set_dest(&tcp_v4(), &dest)),
        golden
    );
}

#[test]
fn new_dest_addr_v6_tunnel() {
    let dest = Destination {
        weight: 2,
        fwd: Forwarding::Tunnel,
        ..Destination::new(ip("fd00::5"), 5353)
    };
    #[rustfmt::skip]
    let golden: &[u8] = &[
        140, 0, 0, 0, 0x24, 0, 5, 0, 8, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 8
        5, 1, 0, 0,             // IPVS_CMD_NEW_DEST
        48, 0, 0x01, 0x80,      // IPVS_CMD_ATTR_SERVICE: UDP [fd00::1]:53
        6, 0, 1, 0, 10, 0, 0, 0,
        6, 0, 2, 0, 17, 0, 0, 0,
        20, 0, 3, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        6, 0, 4, 0, 0, 53, 0, 0,
        72, 0, 0x02, 0x80,      // IPVS_CMD_ATTR_DEST
        20, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, // ADDR fd00::5
        6, 0, 2, 0, 0x14, 0xe9, 0, 0, // PORT 5353 = 0x14e9
        6, 0, 11, 0, 10, 0, 0, 0, // ADDR_FAMILY AF_INET6
        8, 0, 3, 0, 2, 0, 0, 0, //   FWD_METHOD IP_VS_CONN_F_TUNNEL (2)
        8, 0, 4, 0, 2, 0, 0, 0, //   WEIGHT 2
        8, 0, 5, 0, 0, 0, 0, 0,
        8, 0, 6, 0, 0, 0, 0, 0,
    ];
    assert_eq!(
        frame(FAMILY, 8, ACK, encode::new_dest(&udp_v6(), &dest)),
        golden
    );
}

#[test]
fn del_dest_sends_only_the_keys() {
    #[rustfmt::skip]
    let golden: &[u8] = &[
        80, 0, 0, 0, 0x24, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 9
        7, 1, 0, 0,             // IPVS_CMD_DEL_DEST
        20, 0, 0x01, 0x80,      // service fwmark 260
        6, 0, 1, 0, 2, 0, 0, 0,
        8, 0, 5, 0, 0x04, 0x01, 0, 0,
        40, 0, 0x02, 0x80,      // IPVS_CMD_ATTR_DEST: address, port and family only
        20, 0, 1, 0, 10, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        6, 0, 2, 0, 0, 80, 0, 0,
        6, 0, 11, 0, 2, 0, 0, 0,
    ];
    assert_eq!(
        frame(
            FAMILY,
            9,
            ACK,
            encode::del_dest(&fwmark260(), &ip("10.0.0.6"), 80)
        ),
        golden
    );
}

#[test]
fn set_config_timeouts() {
    let timeouts = Timeouts {
        tcp: 7200,
        tcp_fin: 120,
        udp: 300,
    };
    #[rustfmt::skip]
    let golden: &[u8] = &[
        44, 0, 0, 0, 0x24, 0, 5, 0, 10, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, seq 10
        12, 1, 0, 0,            // IPVS_CMD_SET_CONFIG
        8, 0, 4, 0, 0x20, 0x1c, 0, 0, // IPVS_CMD_ATTR_TIMEOUT_TCP 7200 = 0x1c20 seconds
        8, 0, 5, 0, 120, 0, 0, 0, //     IPVS_CMD_ATTR_TIMEOUT_TCP_FIN 120
        8, 0, 6, 0, 0x2c, 0x01, 0, 0, // IPVS_CMD_ATTR_TIMEOUT_UDP 300
    ];
    assert_eq!(
        frame(FAMILY, 10, ACK, encode::set_config(&timeouts)),
        golden
    );
}

#[test]
fn dumps_and_bare_commands() {
    #[rustfmt::skip]
    let services: &[u8] = &[
        20, 0, 0, 0, 0x24, 0, 0x01, 0x03, 11, 0, 0, 0, 0, 0, 0, 0, // NLM_F_REQUEST | NLM_F_DUMP
        4, 1, 0, 0,             // IPVS_CMD_GET_SERVICE, no attributes: every service
    ];
    assert_eq!(frame(FAMILY, 11, DUMP, encode::get_service(None)), services);

    #[rustfmt::skip]
    let dests: &[u8] = &[
        40, 0, 0, 0, 0x24, 0, 0x01, 0x03, 12, 0, 0, 0, 0, 0, 0, 0,
        8, 1, 0, 0,             // IPVS_CMD_GET_DEST
        20, 0, 0x01, 0x80,      // of service fwmark 260
        6, 0, 1, 0, 2, 0, 0, 0,
        8, 0, 5, 0, 0x04, 0x01, 0, 0,
    ];
    assert_eq!(
        frame(FAMILY, 12, DUMP, encode::get_dests(&fwmark260())),
        dests
    );

    for (request, cmd) in [
        (encode::flush(), 17u8),    // IPVS_CMD_FLUSH
        (encode::get_config(), 13), // IPVS_CMD_GET_CONFIG
        (encode::get_info(), 15),   // IPVS_CMD_GET_INFO
    ] {
        #[rustfmt::skip]
        let golden: &[u8] = &[
            20, 0, 0, 0, 0x24, 0, 5, 0, 13, 0, 0, 0, 0, 0, 0, 0,
            cmd, 1, 0, 0,
        ];
        assert_eq!(frame(FAMILY, 13, ACK, request), golden);
    }
}

#[test]
fn get_single_service_by_address() {
    let bytes = frame(FAMILY, 14, ACK, encode::get_service(Some(&tcp_v4())));
    assert_eq!(bytes.len(), 16 + 4 + 48);
    assert_eq!(bytes[16], 4, "IPVS_CMD_GET_SERVICE");
    assert_eq!(&bytes[20..24], &[48, 0, 0x01, 0x80]);
}

#[test]
fn resolve_family_request() {
    #[rustfmt::skip]
    let golden: &[u8] = &[
        32, 0, 0, 0,            // nlmsg_len
        0x10, 0,                // GENL_ID_CTRL
        5, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        3, 2, 0, 0,             // CTRL_CMD_GETFAMILY, controller version 2
        9, 0, 2, 0, b'I', b'P', b'V', b'S', 0, 0, 0, 0, // CTRL_ATTR_FAMILY_NAME "IPVS\0"
    ];
    assert_eq!(frame(0x10, 1, ACK, encode::get_family()), golden);
}
