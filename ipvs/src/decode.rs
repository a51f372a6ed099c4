//! Replies read as `ip_vs_genl_fill_service` / `ip_vs_genl_fill_dest` /
//! `ip_vs_genl_get_cmd` write them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::NLA_TYPE_MASK;

use crate::consts::*;
use crate::message::IpvsReply;
use crate::types::*;

/// Why a reply could not be read; the client adds which operation it answered.
pub(crate) type DecodeFailure = String;

/// The attributes of one level, in order, values borrowed from the message.
pub(crate) struct Attrs<'a>(Vec<(u16, &'a [u8])>);

pub(crate) fn parse_attrs(buf: &[u8]) -> Result<Attrs<'_>, DecodeFailure> {
    let mut attrs = Vec::new();
    let mut pos = 0;
    while buf.len().saturating_sub(pos) >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[pos], buf[pos + 1]]));
        let kind = u16::from_ne_bytes([buf[pos + 2], buf[pos + 3]]) & NLA_TYPE_MASK;
        if len < 4 || pos + len > buf.len() {
            return Err(format!(
                "attribute {kind} at byte {pos} claims {len} bytes, {} left",
                buf.len() - pos
            ));
        }
        attrs.push((kind, &buf[pos + 4..pos + len]));
        pos += (len + 3) & !3;
    }
    Ok(Attrs(attrs))
}

impl<'a> Attrs<'a> {
    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    fn require(&self, kind: u16, what: &str) -> Result<&'a [u8], DecodeFailure> {
        self.get(kind)
            .ok_or_else(|| format!("{what} attribute ({kind}) missing"))
    }

    fn u16(&self, kind: u16, what: &str) -> Result<u16, DecodeFailure> {
        let value = self.require(kind, what)?;
        fixed::<2>(value, what).map(u16::from_ne_bytes)
    }

    fn be16(&self, kind: u16, what: &str) -> Result<u16, DecodeFailure> {
        let value = self.require(kind, what)?;
        fixed::<2>(value, what).map(u16::from_be_bytes)
    }

    fn u32(&self, kind: u16, what: &str) -> Result<u32, DecodeFailure> {
        let value = self.require(kind, what)?;
        fixed::<4>(value, what).map(u32::from_ne_bytes)
    }

    fn u32_or_zero(&self, kind: u16, what: &str) -> Result<u32, DecodeFailure> {
        match self.get(kind) {
            Some(value) => fixed::<4>(value, what).map(u32::from_ne_bytes),
            None => Ok(0),
        }
    }

    fn nested(&self, kind: u16, what: &str) -> Result<Attrs<'a>, DecodeFailure> {
        parse_attrs(self.require(kind, what)?)
    }
}

fn fixed<const N: usize>(value: &[u8], what: &str) -> Result<[u8; N], DecodeFailure> {
    value
        .get(..N)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or_else(|| format!("{what}: {} bytes, expected {N}", value.len()))
}

/// A counter the kernel sends as u32 (`IPVS_SVC_ATTR_STATS`) or u64 (`..._STATS64`).
fn counter(attrs: &Attrs<'_>, kind: u16) -> u64 {
    match attrs.get(kind) {
        Some(v) if v.len() >= 8 => v
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_ne_bytes)
            .unwrap_or(0),
        Some(v) if v.len() >= 4 => v
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u64::from(u32::from_ne_bytes(b)))
            .unwrap_or(0),
        _ => 0,
    }
}

fn stats(attrs: &Attrs<'_>, stats64: u16, stats32: u16) -> Result<Stats, DecodeFailure> {
    let Some(raw) = attrs.get(stats64).or_else(|| attrs.get(stats32)) else {
        return Ok(Stats::default());
    };
    let stats = parse_attrs(raw)?;
    Ok(Stats {
        conns: counter(&stats, IPVS_STATS_ATTR_CONNS),
        in_packets: counter(&stats, IPVS_STATS_ATTR_INPKTS),
        out_packets: counter(&stats, IPVS_STATS_ATTR_OUTPKTS),
        in_bytes: counter(&stats, IPVS_STATS_ATTR_INBYTES),
        out_bytes: counter(&stats, IPVS_STATS_ATTR_OUTBYTES),
    })
}

fn addr(value: &[u8], family: Family, what: &str) -> Result<IpAddr, DecodeFailure> {
    Ok(match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::from(fixed::<4>(value, what)?)),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(fixed::<16>(value, what)?)),
    })
}

fn family(raw: u16) -> Result<Family, DecodeFailure> {
    Family::from_raw(raw).ok_or_else(|| format!("unknown address family {raw}"))
}

fn expect_cmd(reply: &IpvsReply, cmd: u8) -> Result<(), DecodeFailure> {
    if reply.cmd == cmd {
        Ok(())
    } else {
        Err(format!("reply command {}, expected {cmd}", reply.cmd))
    }
}

pub(crate) fn service(reply: &IpvsReply) -> Result<ServiceEntry, DecodeFailure> {
    expect_cmd(reply, IPVS_CMD_NEW_SERVICE)?;
    let top = parse_attrs(&reply.attrs)?;
    let svc = top.nested(IPVS_CMD_ATTR_SERVICE, "service")?;
    let family = family(svc.u16(IPVS_SVC_ATTR_AF, "service address family")?)?;
    let fwmark = svc.u32_or_zero(IPVS_SVC_ATTR_FWMARK, "service fwmark")?;
    let key = if fwmark != 0 {
        ServiceKey::Fwmark {
            mark: fwmark,
            family,
        }
    } else {
        let raw_proto = svc.u16(IPVS_SVC_ATTR_PROTOCOL, "service protocol")?;
        ServiceKey::Addr {
            addr: addr(
                svc.require(IPVS_SVC_ATTR_ADDR, "service address")?,
                family,
                "service address",
            )?,
            port: svc.be16(IPVS_SVC_ATTR_PORT, "service port")?,
            proto: u8::try_from(raw_proto)
                .ok()
                .and_then(Proto::from_number)
                .ok_or_else(|| format!("unknown service protocol {raw_proto}"))?,
        }
    };
    let sched = svc.require(IPVS_SVC_ATTR_SCHED_NAME, "scheduler name")?;
    let sched = sched.split(|b| *b == 0).next().unwrap_or_default();
    let sched = std::str::from_utf8(sched).map_err(|e| format!("scheduler name: {e}"))?;
    let flags = fixed::<4>(
        svc.require(IPVS_SVC_ATTR_FLAGS, "service flags")?,
        "service flags",
    )?;
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler: SchedName::from_name(sched),
            flags: ServiceFlags(u32::from_ne_bytes(flags) & !IP_VS_SVC_F_HASHED),
            timeout: svc.u32_or_zero(IPVS_SVC_ATTR_TIMEOUT, "service timeout")?,
            netmask: svc.u32_or_zero(IPVS_SVC_ATTR_NETMASK, "service netmask")?,
        },
        stats: stats(&svc, IPVS_SVC_ATTR_STATS64, IPVS_SVC_ATTR_STATS)?,
    })
}

/// `service_family` stands in for kernels that do not report `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub(crate) fn destination(
    reply: &IpvsReply,
    service_family: Family,
) -> Result<DestinationEntry, DecodeFailure> {
    expect_cmd(reply, IPVS_CMD_NEW_DEST)?;
    let top = parse_attrs(&reply.attrs)?;
    let dest = top.nested(IPVS_CMD_ATTR_DEST, "destination")?;
    let family = match dest.get(IPVS_DEST_ATTR_ADDR_FAMILY) {
        Some(_) => family(dest.u16(IPVS_DEST_ATTR_ADDR_FAMILY, "destination family")?)?,
        None => service_family,
    };
    let raw_fwd = dest.u32(IPVS_DEST_ATTR_FWD_METHOD, "forwarding method")?;
    Ok(DestinationEntry {
        destination: Destination {
            addr: addr(
                dest.require(IPVS_DEST_ATTR_ADDR, "destination address")?,
                family,
                "destination address",
            )?,
            port: dest.be16(IPVS_DEST_ATTR_PORT, "destination port")?,
            weight: dest.u32(IPVS_DEST_ATTR_WEIGHT, "destination weight")?,
            fwd: Forwarding::from_raw(raw_fwd)
                .ok_or_else(|| format!("unknown forwarding method {raw_fwd}"))?,
            upper_threshold: dest.u32_or_zero(IPVS_DEST_ATTR_U_THRESH, "upper threshold")?,
            lower_threshold: dest.u32_or_zero(IPVS_DEST_ATTR_L_THRESH, "lower threshold")?,
        },
        active_conns: dest.u32_or_zero(IPVS_DEST_ATTR_ACTIVE_CONNS, "active connections")?,
        inactive_conns: dest.u32_or_zero(IPVS_DEST_ATTR_INACT_CONNS, "inactive connections")?,
        persistent_conns: dest
            .u32_or_zero(IPVS_DEST_ATTR_PERSIST_CONNS, "persistent connections")?,
        stats: stats(&dest, IPVS_DEST_ATTR_STATS64, IPVS_DEST_ATTR_STATS)?,
    })
}

pub(crate) fn timeouts(reply: &IpvsReply) -> Result<Timeouts, DecodeFailure> {
    expect_cmd(reply, IPVS_CMD_SET_CONFIG)?;
    let top = parse_attrs(&reply.attrs)?;
    Ok(Timeouts {
        tcp: top.u32_or_zero(IPVS_CMD_ATTR_TIMEOUT_TCP, "TCP timeout")?,
        tcp_fin: top.u32_or_zero(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, "TCP FIN timeout")?,
        udp: top.u32_or_zero(IPVS_CMD_ATTR_TIMEOUT_UDP, "UDP timeout")?,
    })
}

pub(crate) fn info(reply: &IpvsReply) -> Result<Info, DecodeFailure> {
    expect_cmd(reply, IPVS_CMD_SET_INFO)?;
    let top = parse_attrs(&reply.attrs)?;
    let [_, major, minor, patch] = top
        .u32(IPVS_INFO_ATTR_VERSION, "IPVS version")?
        .to_be_bytes();
    Ok(Info {
        version: (major, minor, patch),
        conn_tab_size: top.u32_or_zero(IPVS_INFO_ATTR_CONN_TAB_SIZE, "connection table size")?,
    })
}
