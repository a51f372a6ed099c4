//! Hand-made kernel replies (as `ip_vs_genl_fill_service` / `ip_vs_genl_fill_dest` write them)
//! fed through the reply collector and decoders, including multipart dumps.
//!
//! The builders below write `nlmsghdr`, `genlmsghdr` and `nlattr` by hand, independently of
//! the encoder under test.

use std::net::IpAddr;

use super::FAMILY;
use crate::decode;
use crate::error::{IpvsError, Operation};
use crate::exchange::{Exchange, ExchangeError, Progress};
use crate::message::IpvsReply;
use crate::types::*;

const NLM_F_MULTI: u16 = 0x2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(4 + value.len() as u16).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | 0x8000, &parts.concat())
}

fn u16_(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn u32_(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn u64_(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn addr16(addr: &str) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(16 + payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&4242u32.to_le_bytes()); // our port id, as the kernel addresses us
    out.extend_from_slice(payload);
    out
}

fn genl(cmd: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![cmd, 1, 0, 0];
    out.extend(attrs.concat());
    out
}

fn done(seq: u32, code: i32) -> Vec<u8> {
    nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, &code.to_le_bytes())
}

fn error(seq: u32, code: i32) -> Vec<u8> {
    let mut payload = code.to_le_bytes().to_vec();
    payload.extend(nlmsg(FAMILY, 5, seq, &[]).iter().take(16)); // the request's header
    nlmsg(NLMSG_ERROR, 0, seq, &payload)
}

/// The kernel's dump entry for fwmark 260, rr, with 5 connections scheduled.
#[rustfmt::skip]
const FWMARK_260_ENTRY: &[u8] = &[
    1, 1, 0, 0,                     // IPVS_CMD_NEW_SERVICE (dump entries use the NEW command)
    104, 0, 0x01, 0x80,             // IPVS_CMD_ATTR_SERVICE, nested, 4 + 100
    6, 0, 1, 0, 2, 0, 0, 0,         //   AF_INET
    8, 0, 5, 0, 0x04, 0x01, 0, 0,   //   FWMARK 260
    7, 0, 6, 0, b'r', b'r', 0, 0,   //   SCHED_NAME "rr"
    12, 0, 7, 0,                    //   FLAGS
    2, 0, 0, 0,                     //     IP_VS_SVC_F_HASHED: kernel bookkeeping, dropped
    0xff, 0xff, 0xff, 0xff,         //     mask
    8, 0, 8, 0, 0, 0, 0, 0,         //   TIMEOUT 0
    8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff, // NETMASK
    20, 0, 0x0a, 0x80,              //   IPVS_SVC_ATTR_STATS (u32 counters), nested
    8, 0, 1, 0, 9, 0, 0, 0,         //     CONNS 9: overridden by STATS64 below
    8, 0, 2, 0, 1, 0, 0, 0,         //     INPKTS 1
    28, 0, 0x0c, 0x80,              //   IPVS_SVC_ATTR_STATS64, nested
    12, 0, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0,  // CONNS 5 (u64)
    12, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0,  // INBYTES 1 << 32 (u64)
];

fn fwmark_260_message(seq: u32) -> Vec<u8> {
    nlmsg(FAMILY, NLM_F_MULTI, seq, FWMARK_260_ENTRY)
}

fn tcp_v6_message(seq: u32) -> Vec<u8> {
    let service = nest(
        1,
        &[
            nla(1, &u16_(10)),                       // AF_INET6
            nla(2, &u16_(6)),                        // IPPROTO_TCP
            nla(3, &addr16("fd00::1")),              // ADDR
            nla(4, &443u16.to_be_bytes()),           // PORT, network order
            nla(6, b"wlc\0"),                        // SCHED_NAME
            nla(7, &[u32_(0x3), u32_(!0)].concat()), // PERSISTENT | HASHED
            nla(8, &u32_(360)),                      // TIMEOUT
            nla(9, &u32_(64)),                       // NETMASK: prefix length
        ],
    );
    nlmsg(FAMILY, NLM_F_MULTI, seq, &genl(1, &[service]))
}

fn collect(seq: u32, dump: bool, datagrams: &[Vec<u8>]) -> Result<Vec<IpvsReply>, ExchangeError> {
    let mut exchange = Exchange::<IpvsReply>::new(seq, dump);
    for (i, datagram) in datagrams.iter().enumerate() {
        match exchange.feed(datagram)? {
            Progress::Complete => {
                assert_eq!(i, datagrams.len() - 1, "complete before the last datagram");
                return Ok(exchange.into_replies());
            }
            Progress::More => {}
        }
    }
    panic!("not complete after every datagram")
}

#[test]
fn service_dump_across_two_datagrams() {
    let first = [fwmark_260_message(7), tcp_v6_message(7)].concat();
    let second = done(7, 0);
    let replies = collect(7, true, &[first, second]).unwrap();
    let entries: Vec<ServiceEntry> = replies
        .iter()
        .map(|r| decode::service(r).unwrap())
        .collect();

    assert_eq!(
        entries[0],
        ServiceEntry {
            service: Service::new(
                ServiceKey::Fwmark {
                    mark: 260,
                    family: Family::Inet
                },
                Scheduler::Rr
            ),
            stats: Stats {
                conns: 5,
                in_bytes: 1 << 32,
                ..Stats::default()
            },
        }
    );
    assert_eq!(
        entries[1].service,
        Service {
            key: ServiceKey::Addr {
                addr: "fd00::1".parse().unwrap(),
                port: 443,
                proto: Proto::Tcp
            },
            scheduler: SchedName::Other("wlc".to_string()),
            flags: ServiceFlags::PERSISTENT,
            timeout: 360,
            netmask: 64,
        }
    );
    assert_eq!(entries[1].stats, Stats::default());
}

#[test]
fn dump_parts_may_arrive_one_message_per_datagram() {
    let datagrams = [fwmark_260_message(3), tcp_v6_message(3), done(3, 0)];
    assert_eq!(collect(3, true, &datagrams).unwrap().len(), 2);
}

#[test]
fn messages_for_other_requests_are_ignored() {
    let datagram = [
        fwmark_260_message(6), // a late answer to request 6
        tcp_v6_message(7),
        done(6, 0),
        done(7, 0),
    ]
    .concat();
    let replies = collect(7, true, &[datagram]).unwrap();
    assert_eq!(replies.len(), 1);
    assert!(matches!(
        decode::service(&replies[0]).unwrap().service.key,
        ServiceKey::Addr { port: 443, .. }
    ));
}

#[test]
fn stats_fall_back_to_32_bit_counters() {
    let service = nest(
        1,
        &[
            nla(1, &u16_(2)),
            nla(5, &u32_(1)),
            nla(6, b"rr\0"),
            nla(7, &[u32_(0), u32_(!0)].concat()),
            nla(8, &u32_(0)),
            nla(9, &u32_(!0)),
            nest(10, &[nla(1, &u32_(12)), nla(3, &u32_(34))]),
        ],
    );
    let reply = IpvsReply {
        cmd: 1,
        attrs: service,
    };
    let stats = decode::service(&reply).unwrap().stats;
    assert_eq!(stats.conns, 12);
    assert_eq!(stats.out_packets, 34);
}

fn dest_message(seq: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    nlmsg(FAMILY, NLM_F_MULTI, seq, &genl(5, &[nest(2, attrs)]))
}

#[test]
fn destination_dump_in_one_datagram() {
    let with_family = dest_message(
        9,
        &[
            nla(1, &addr16("10.0.0.5")),
            nla(2, &80u16.to_be_bytes()),
            nla(3, &u32_(0)),   // masq
            nla(4, &u32_(1)),   // weight
            nla(5, &u32_(100)), // upper
            nla(6, &u32_(10)),  // lower
            nla(7, &u32_(3)),   // active
            nla(8, &u32_(4)),   // inactive
            nla(9, &u32_(0)),   // persistent
            nla(11, &u16_(2)),  // ADDR_FAMILY AF_INET
            nest(12, &[nla(1, &u64_(7))]),
        ],
    );
    // An older kernel without IPVS_DEST_ATTR_ADDR_FAMILY: the service's family applies.
    let without_family = dest_message(
        9,
        &[
            nla(1, &addr16("10.0.0.6")),
            nla(2, &80u16.to_be_bytes()),
            nla(3, &u32_(0x0100 | 2)), // IP_VS_CONN_F_INACTIVE bits beside TUNNEL
            nla(4, &u32_(0)),
            nla(5, &u32_(0)),
            nla(6, &u32_(0)),
        ],
    );
    let datagram = [with_family, without_family, done(9, 0)].concat();
    let replies = collect(9, true, &[datagram]).unwrap();
    let dests: Vec<DestinationEntry> = replies
        .iter()
        .map(|r| decode::destination(r, Family::Inet).unwrap())
        .collect();
    assert_eq!(
        dests[0],
        DestinationEntry {
            destination: Destination {
                addr: "10.0.0.5".parse().unwrap(),
                port: 80,
                weight: 1,
                fwd: Forwarding::Masq,
                upper_threshold: 100,
                lower_threshold: 10,
            },
            active_conns: 3,
            inactive_conns: 4,
            persistent_conns: 0,
            stats: Stats {
                conns: 7,
                ..Stats::default()
            },
        }
    );
    assert_eq!(
        dests[1].destination,
        Destination {
            weight: 0,
            fwd: Forwarding::Tunnel,
            ..Destination::new("10.0.0.6".parse().unwrap(), 80)
        }
    );
}

#[test]
fn ipv6_destination() {
    let message = dest_message(
        1,
        &[
            nla(1, &addr16("fd00::5")),
            nla(2, &5353u16.to_be_bytes()),
            nla(3, &u32_(3)), // direct routing
            nla(4, &u32_(2)),
            nla(11, &u16_(10)),
        ],
    );
    let replies = collect(1, true, &[[message, done(1, 0)].concat()]).unwrap();
    let dest = decode::destination(&replies[0], Family::Inet6)
        .unwrap()
        .destination;
    assert_eq!(dest.addr, "fd00::5".parse::<IpAddr>().unwrap());
    assert_eq!(dest.port, 5353);
    assert_eq!(dest.fwd, Forwarding::Route);
    assert_eq!(dest.weight, 2);
}

#[test]
fn acknowledgement_completes_a_command() {
    assert!(collect(4, false, &[error(4, 0)]).unwrap().is_empty());
}

#[test]
fn reply_then_acknowledgement() {
    let config = nlmsg(
        FAMILY,
        0,
        5,
        &genl(
            12, // IPVS_CMD_SET_CONFIG is how GET_CONFIG answers
            &[nla(4, &u32_(7200)), nla(5, &u32_(120)), nla(6, &u32_(300))],
        ),
    );
    let replies = collect(5, false, &[config, error(5, 0)]).unwrap();
    assert_eq!(
        decode::timeouts(&replies[0]).unwrap(),
        Timeouts {
            tcp: 7200,
            tcp_fin: 120,
            udp: 300
        }
    );
}

#[test]
fn info_reply() {
    let reply = IpvsReply {
        cmd: 14, // IPVS_CMD_SET_INFO
        attrs: [nla(1, &u32_(0x010201)), nla(2, &u32_(4096))].concat(),
    };
    assert_eq!(
        decode::info(&reply).unwrap(),
        Info {
            version: (1, 2, 1),
            conn_tab_size: 4096
        }
    );
}

#[test]
fn kernel_errors_carry_the_errno() {
    let mut exchange = Exchange::<IpvsReply>::new(2, false);
    assert_eq!(
        exchange.feed(&error(2, -libc::EEXIST)),
        Err(ExchangeError::Kernel(libc::EEXIST))
    );
    let mut dump = Exchange::<IpvsReply>::new(3, true);
    assert_eq!(
        dump.feed(&done(3, -libc::EPERM)),
        Err(ExchangeError::Kernel(libc::EPERM))
    );
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    // A netlink message claiming more bytes than the datagram has.
    let mut truncated = fwmark_260_message(1);
    truncated.truncate(40);
    let mut exchange = Exchange::<IpvsReply>::new(1, true);
    assert!(matches!(
        exchange.feed(&truncated),
        Err(ExchangeError::Decode(_))
    ));

    // An attribute claiming more bytes than its message has.
    let mut attrs = FWMARK_260_ENTRY[4..].to_vec();
    attrs[12] = 200; // the length of IPVS_SVC_ATTR_FWMARK
    let reply = IpvsReply { cmd: 1, attrs };
    assert!(decode::service(&reply)
        .unwrap_err()
        .contains("claims 200 bytes"));

    // A service without the attributes that identify it.
    let reply = IpvsReply {
        cmd: 1,
        attrs: nest(1, &[nla(1, &u16_(2))]),
    };
    assert!(decode::service(&reply).is_err());

    // An unexpected command.
    let reply = IpvsReply {
        cmd: 5,
        attrs: FWMARK_260_ENTRY[4..].to_vec(),
    };
    assert!(decode::service(&reply).unwrap_err().contains("command 5"));
}

#[test]
fn errors_name_the_operation_and_the_object() {
    let fwmark = ServiceKey::Fwmark {
        mark: 260,
        family: Family::Inet,
    };
    let e = IpvsError::Kernel {
        op: Operation::AddDestination(fwmark, "10.0.0.5:80".parse().unwrap()),
        errno: libc::EEXIST,
    };
    assert_eq!(
        e.to_string(),
        "adding destination 10.0.0.5:80 to fwmark 260: File exists"
    );
    assert!(e.is_exists() && !e.is_not_found());

    let tcp6 = ServiceKey::Addr {
        addr: "fd00::1".parse().unwrap(),
        port: 443,
        proto: Proto::Tcp,
    };
    let e = IpvsError::Kernel {
        op: Operation::DeleteService(tcp6),
        errno: libc::ESRCH,
    };
    assert_eq!(
        e.to_string(),
        "deleting service TCP [fd00::1]:443: No such process"
    );
    assert!(e.is_not_found());
}
