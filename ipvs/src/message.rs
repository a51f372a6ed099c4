//! The IPVS generic-netlink payload: a command and its attributes, on top of
//! `netlink-packet-generic`'s `genlmsghdr` handling.

use netlink_packet_core::{DecodeError, Emitable, Nla, ParseableParametrized, NLA_F_NESTED};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use crate::consts::{IPVS_GENL_NAME, IPVS_GENL_VERSION};

/// One attribute as the kernel's `nla_policy` types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// `NLA_U16`, host byte order.
    U16(u16),
    /// `NLA_U32`, host byte order.
    U32(u32),
    /// `NLA_U16` holding a `__be16` (ports).
    Be16(u16),
    /// `NLA_BINARY` (addresses, `struct ip_vs_flags`).
    Bytes(Vec<u8>),
    /// `NLA_NUL_STRING`: emitted with its terminating NUL.
    CString(String),
    /// `NLA_NESTED`.
    Nested(Vec<Attr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) kind: u16,
    pub(crate) value: Value,
}

impl Attr {
    pub(crate) fn new(kind: u16, value: Value) -> Self {
        Attr { kind, value }
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match &self.value {
            Value::U16(_) | Value::Be16(_) => 2,
            Value::U32(_) => 4,
            Value::Bytes(bytes) => bytes.len(),
            Value::CString(text) => text.len() + 1,
            Value::Nested(attrs) => attrs.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self.value {
            Value::Nested(_) => self.kind | NLA_F_NESTED,
            _ => self.kind,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match &self.value {
            Value::U16(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Value::Be16(v) => buffer[..2].copy_from_slice(&v.to_be_bytes()),
            Value::U32(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Value::Bytes(bytes) => buffer[..bytes.len()].copy_from_slice(bytes),
            Value::CString(text) => {
                buffer[..text.len()].copy_from_slice(text.as_bytes());
                buffer[text.len()] = 0;
            }
            Value::Nested(attrs) => attrs.as_slice().emit(buffer),
        }
    }
}

/// A request to the IPVS family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpvsRequest {
    pub(crate) cmd: u8,
    pub(crate) attrs: Vec<Attr>,
}

impl GenlFamily for IpvsRequest {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsRequest {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

/// A message from the IPVS family, its attributes left raw for `decode` to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpvsReply {
    pub(crate) cmd: u8,
    pub(crate) attrs: Vec<u8>,
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsReply {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(IpvsReply {
            cmd: header.cmd,
            attrs: buf.to_vec(),
        })
    }
}
