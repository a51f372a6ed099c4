//! The bytes: nfnetlink messages that add and delete set/map elements, written by hand from
//! the kernel's uapi (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nf_tables.h`), and a reader for what comes back.
//!
//! One batch is `NFNL_MSG_BATCH_BEGIN`, one `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` per
//! [`Op`] (and per [`ELEMENTS_PER_COMMAND`] elements, as the text executor chunks), then
//! `NFNL_MSG_BATCH_END`. Every element message asks for an ACK, so each one is answered on
//! its own and a refusal names its set; the begin and end messages ask for none.
//!
//! [`Op::FlushCollection`] is a `NFT_MSG_DELSETELEM` that carries the set and table names and
//! no `NFTA_SET_ELEM_LIST_ELEMENTS`: the kernel then deletes every element of the set
//! (`nf_tables_delsetelem` flushes when the list attribute is absent), inside the batch's
//! transaction. nft sends the same message for `flush set` (set name before table name).
//!
//! Element data is laid out the way nft lays it out (and the kernel checks the lengths
//! against the set's declaration): an address is its 4 octets, a port 2 bytes big-endian, a
//! protocol 1 byte, a mark and a plain integer (the `numgen` slot) 4 bytes in host order. A
//! concatenation pads every part to a 4-byte register; a single value is not padded.

use std::net::Ipv4Addr;

use crate::model::{Element, Value};
use crate::txn::{Op, Transaction, ELEMENTS_PER_COMMAND};

use super::{ElementOp, NetlinkError};

// linux/netlink.h
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_ROOT | NLM_F_MATCH`
const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;
pub(crate) const NLMSGERR_ATTR_OFFS: u16 = 2;

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNETLINK_V0: u8 = 0;
const NFGENMSG_LEN: usize = 4;

// linux/netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;

// linux/netfilter/nf_tables.h
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NFT_REG32_SIZE`: each part of a concatenation takes a whole number of these.
const REG32: usize = 4;

/// What a map element can point at when its data is a verdict (`type ... : verdict`).
/// routemesh's tables map to addresses, ports and marks today; verdicts are encoded (and
/// checked against nft) so a verdict map can go the same way when one appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// `NF_DROP`, `NF_ACCEPT`, `NFT_JUMP`, `NFT_GOTO`.
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            Verdict::Accept | Verdict::Drop => None,
        }
    }
}

/// An element's map data as the kernel gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementData {
    /// A set element.
    None,
    /// Bytes (`NFTA_DATA_VALUE`).
    Value(Vec<u8>),
    Verdict(Verdict),
}

/// One element, encoded: its key bytes and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawElement {
    pub key: Vec<u8>,
    pub data: ElementData,
    /// How errors name the element (nft's spelling).
    pub label: String,
}

/// Appends the bytes of one value; `false` for values that have no element encoding here.
fn push_value(v: &Value, out: &mut Vec<u8>) -> bool {
    match v {
        Value::Addr(a) => out.extend_from_slice(&a.octets()),
        Value::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
        Value::Proto(p) => out.push(p.number()),
        // `numgen` and `meta mark` are host-order integers in nft's registers.
        Value::Int(n) | Value::Mark(n) => out.extend_from_slice(&n.to_ne_bytes()),
        Value::Net(_)
        | Value::Iface(_)
        | Value::CtState(_)
        | Value::CtStatus(_)
        | Value::AddrType(_)
        | Value::Presence(_) => return false,
    }
    true
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Addr(_) => "address",
        Value::Net(_) => "prefix (an interval set)",
        Value::Proto(_) => "protocol",
        Value::Port(_) => "port",
        Value::Int(_) => "integer",
        Value::Mark(_) => "mark",
        Value::Iface(_) => "interface name",
        Value::CtState(_) => "ct state",
        Value::CtStatus(_) => "ct status",
        Value::AddrType(_) => "address type",
        Value::Presence(_) => "presence",
    }
}

/// A key or a map's data: one value as it is, several as a concatenation of 4-byte
/// registers. `Err` names the value that has no encoding here.
pub fn concat_bytes(values: &[Value]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(values.len() * REG32);
    concat_into(values, &mut out)?;
    Ok(out)
}

/// [`concat_bytes`] into a buffer the caller reuses (cleared first).
pub(crate) fn concat_into(values: &[Value], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    for v in values {
        if !push_value(v, out) {
            return Err(format!(
                "{} {v} has no netlink element encoding here",
                value_kind(v)
            ));
        }
        if values.len() > 1 {
            out.resize(out.len().next_multiple_of(REG32), 0);
        }
    }
    if out.is_empty() {
        return Err("an empty key".to_string());
    }
    Ok(())
}

/// A model element as the kernel gets it.
pub fn raw_element(element: &Element) -> Result<RawElement, String> {
    let label = element.to_string();
    let key = concat_bytes(&element.key).map_err(|e| format!("element {label}: {e}"))?;
    let data = if element.data.is_empty() {
        ElementData::None
    } else {
        ElementData::Value(
            concat_bytes(&element.data).map_err(|e| format!("element {label}: {e}"))?,
        )
    };
    Ok(RawElement { key, data, label })
}

/// A key to delete, as the kernel gets it.
pub fn raw_key(key: &[Value]) -> Result<RawElement, String> {
    let label = crate::render::concat(key).to_string();
    let bytes = concat_bytes(key).map_err(|e| format!("element {label}: {e}"))?;
    Ok(RawElement {
        key: bytes,
        data: ElementData::None,
        label,
    })
}

/// One element message of a batch, with what errors need to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Where the message starts in [`Batch::bytes`].
    pub start: usize,
    pub len: usize,
    pub seq: u32,
    pub op: ElementOp,
    pub table: String,
    pub set: String,
    /// Per element: its attribute's offset range inside the message, and its label.
    pub elements: Vec<(usize, usize, String)>,
}

impl MessageInfo {
    /// The element whose attribute holds `offset` (from the message's start), if any.
    pub fn element_at(&self, offset: usize) -> Option<&str> {
        self.elements
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&offset))
            .map(|(_, _, label)| label.as_str())
    }
}

/// A whole batch, ready to send: begin, the element messages, end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub messages: Vec<MessageInfo>,
    /// Sequence number of the begin message; the others follow it.
    pub first_seq: u32,
}

/// What one element message carries.
#[derive(Debug, Clone)]
pub struct SetElements<'a> {
    pub op: ElementOp,
    pub table: &'a str,
    pub set: &'a str,
    pub elements: Vec<RawElement>,
}

/// `Ok(None)` when the transaction is not element-only (it goes to `nft -f`);
/// [`NetlinkError::Unsupported`] when an element has no encoding here.
pub fn transaction_parts(txn: &Transaction) -> Result<Option<Vec<SetElements<'_>>>, NetlinkError> {
    let mut parts = Vec::new();
    for op in &txn.ops {
        match op {
            Op::AddElements {
                table,
                collection,
                elements,
            } => {
                let raw = elements
                    .iter()
                    .map(raw_element)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|detail| NetlinkError::Unsupported {
                        table: table.clone(),
                        set: collection.clone(),
                        op: ElementOp::Add,
                        detail,
                    })?;
                parts.push(SetElements {
                    op: ElementOp::Add,
                    table,
                    set: collection,
                    elements: raw,
                });
            }
            Op::DeleteElements {
                table,
                collection,
                keys,
            } => {
                let raw = keys
                    .iter()
                    .map(|k| raw_key(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|detail| NetlinkError::Unsupported {
                        table: table.clone(),
                        set: collection.clone(),
                        op: ElementOp::Delete,
                        detail,
                    })?;
                parts.push(SetElements {
                    op: ElementOp::Delete,
                    table,
                    set: collection,
                    elements: raw,
                });
            }
            Op::FlushCollection { table, name, .. } => parts.push(SetElements {
                op: ElementOp::Flush,
                table,
                set: name,
                elements: Vec::new(),
            }),
            _ => return Ok(None),
        }
    }
    Ok(Some(parts))
}

/// The batch sending `parts`, sequence numbers from `first_seq` on. Empty parts send nothing
/// (an `add element` with no elements is not a command).
pub fn batch(parts: &[SetElements<'_>], first_seq: u32) -> Batch {
    let mut w = Writer::default();
    let mut seq = first_seq;
    w.control(NFNL_MSG_BATCH_BEGIN, seq);
    let mut messages = Vec::new();
    for part in parts {
        if part.op == ElementOp::Flush {
            seq = seq.wrapping_add(1);
            messages.push(w.flush(part, seq));
            continue;
        }
        for chunk in part.elements.chunks(ELEMENTS_PER_COMMAND) {
            seq = seq.wrapping_add(1);
            messages.push(w.elements(part, chunk, seq));
        }
    }
    seq = seq.wrapping_add(1);
    w.control(NFNL_MSG_BATCH_END, seq);
    Batch {
        bytes: w.buf,
        messages,
        first_seq,
    }
}

impl Batch {
    /// Renumbers the batch from `first_seq` (the socket owns the counter).
    pub fn renumber(&mut self, first_seq: u32) {
        let mut offset = 0;
        let mut seq = first_seq;
        while offset + NLMSG_HDRLEN <= self.bytes.len() {
            let len = read_u32(&self.bytes, offset) as usize;
            self.bytes[offset + 8..offset + 12].copy_from_slice(&seq.to_ne_bytes());
            if let Some(m) = self.messages.iter_mut().find(|m| m.start == offset) {
                m.seq = seq;
            }
            seq = seq.wrapping_add(1);
            offset += align(len.max(NLMSG_HDRLEN));
        }
        self.first_seq = first_seq;
    }

    /// Sequence numbers this batch uses: begin, every element message, end.
    pub fn seq_count(&self) -> u32 {
        self.messages.len() as u32 + 2
    }

    pub fn message(&self, seq: u32) -> Option<&MessageInfo> {
        self.messages.iter().find(|m| m.seq == seq)
    }
}

/// A request for every rule of `table` (`NFT_MSG_GETRULE`, dumped, filtered by table).
pub(crate) fn rule_dump_request(table: &str, seq: u32) -> Vec<u8> {
    let mut w = Writer::default();
    let msg = w.begin_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_IPV4,
        0,
    );
    w.attr_str(NFTA_RULE_TABLE, table);
    w.end_msg(msg);
    w.buf
}

/// A request for every element of one set (`NFT_MSG_GETSETELEM`, dumped).
pub(crate) fn setelem_dump_request(table: &str, set: &str, seq: u32) -> Vec<u8> {
    let mut w = Writer::default();
    let msg = w.begin_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_IPV4,
        0,
    );
    w.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
    w.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    w.end_msg(msg);
    w.buf
}

/// The payload of one message of a set's dump (`NFT_MSG_NEWSETELEM`), if it is one.
pub(crate) fn setelem_payload<'a>(m: &Msg<'a>) -> Option<&'a [u8]> {
    if m.kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
        return None;
    }
    m.payload.get(NFGENMSG_LEN..)
}

/// The elements in one payload of a set's dump: key bytes and, for a map whose data is a
/// value, the data bytes (`None` for a set element or a verdict). Borrowed, not copied: tens
/// of thousands are compared per resync.
pub(crate) fn listed_elements<'a>(payload: &'a [u8], out: &mut Vec<(&'a [u8], Option<&'a [u8]>)>) {
    for (kind, list) in attrs(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in attrs(list) {
            let (mut key, mut data) = (None, None);
            for (kind, payload) in attrs(elem) {
                let value = || {
                    attrs(payload)
                        .find(|(k, _)| *k == NFTA_DATA_VALUE)
                        .map(|(_, v)| v)
                };
                match kind {
                    NFTA_SET_ELEM_KEY => key = value(),
                    NFTA_SET_ELEM_DATA => data = value(),
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push((key, data));
            }
        }
    }
}

/// One rule of a dump: its chain and its expressions as the kernel encodes them (the handle
/// and position left out, so the same rule added again reads the same).
pub(crate) fn dumped_rule(m: &Msg<'_>) -> Option<(String, Vec<u8>)> {
    if m.kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
        return None;
    }
    let (mut chain, mut exprs) = (None, Vec::new());
    for (kind, payload) in attrs(m.payload.get(NFGENMSG_LEN..)?) {
        match kind {
            NFTA_RULE_CHAIN => chain = Some(c_str(payload)),
            NFTA_RULE_EXPRESSIONS => exprs = payload.to_vec(),
            _ => {}
        }
    }
    Some((chain?, exprs))
}

fn align(n: usize) -> usize {
    n.next_multiple_of(4)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_ne_bytes(b)
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = buf.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_ne_bytes(b)
}

/// Appends netlink messages and attributes to one buffer.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts a message; returns its start for [`Writer::end_msg`].
    fn begin_msg(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version, res_id (big-endian).
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn control(&mut self, kind: u16, seq: u32) {
        let start = self.begin_msg(
            kind,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        self.end_msg(start);
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// A NUL-terminated string attribute.
    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut payload = Vec::with_capacity(s.len() + 1);
        payload.extend_from_slice(s.as_bytes());
        payload.push(0);
        self.attr(kind, &payload);
    }

    fn nest_start(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// A `NFT_MSG_DELSETELEM` without elements: flushes the set.
    fn flush(&mut self, part: &SetElements<'_>, seq: u32) -> MessageInfo {
        let msg = self.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NFPROTO_IPV4,
            0,
        );
        // nft's order for a flush: the set, then the table.
        self.attr_str(NFTA_SET_ELEM_LIST_SET, part.set);
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, part.table);
        self.end_msg(msg);
        MessageInfo {
            start: msg,
            len: self.buf.len() - msg,
            seq,
            op: ElementOp::Flush,
            table: part.table.to_string(),
            set: part.set.to_string(),
            elements: Vec::new(),
        }
    }

    fn elements(&mut self, part: &SetElements<'_>, chunk: &[RawElement], seq: u32) -> MessageInfo {
        let (kind, flags) = match part.op {
            // `add element`: no NLM_F_EXCL, an element already there is fine (as in nft).
            ElementOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
            ElementOp::Delete | ElementOp::Flush => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        let msg = self.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            seq,
            NFPROTO_IPV4,
            0,
        );
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, part.table);
        self.attr_str(NFTA_SET_ELEM_LIST_SET, part.set);
        let list = self.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut elements = Vec::with_capacity(chunk.len());
        for (i, e) in chunk.iter().enumerate() {
            // The kernel reads the list's entries whatever their type; nft numbers them 1, 2,
            // 3... (`NFTA_LIST_ELEM` is 1), and so do we, so our bytes are nft's.
            let at = self.nest_start(NFTA_LIST_ELEM.wrapping_add(i as u16) & NLA_TYPE_MASK);
            let key = self.nest_start(NFTA_SET_ELEM_KEY);
            self.attr(NFTA_DATA_VALUE, &e.key);
            self.nest_end(key);
            match &e.data {
                ElementData::None => {}
                ElementData::Value(bytes) => {
                    let data = self.nest_start(NFTA_SET_ELEM_DATA);
                    self.attr(NFTA_DATA_VALUE, bytes);
                    self.nest_end(data);
                }
                ElementData::Verdict(v) => {
                    let data = self.nest_start(NFTA_SET_ELEM_DATA);
                    let verdict = self.nest_start(NFTA_DATA_VERDICT);
                    self.attr(NFTA_VERDICT_CODE, &v.code().to_be_bytes());
                    if let Some(chain) = v.chain() {
                        self.attr_str(NFTA_VERDICT_CHAIN, chain);
                    }
                    self.nest_end(verdict);
                    self.nest_end(data);
                }
            }
            self.nest_end(at);
            elements.push((at - msg, self.buf.len() - msg, e.label.clone()));
        }
        self.nest_end(list);
        self.end_msg(msg);
        MessageInfo {
            start: msg,
            len: self.buf.len() - msg,
            seq,
            op: part.op,
            table: part.table.to_string(),
            set: part.set.to_string(),
            elements,
        }
    }
}

/// Netlink attributes in `buf`: (type without flags, payload).
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > buf.len() {
            return None;
        }
        let len = read_u16(buf, at) as usize;
        let kind = read_u16(buf, at + 2) & NLA_TYPE_MASK;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let payload = &buf[at + 4..at + len];
        at += align(len);
        Some((kind, payload))
    })
}

/// One netlink message of a buffer: type, flags, seq, payload (after the 16-byte header).
pub(crate) struct Msg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages in a datagram (or a batch).
pub(crate) fn messages(buf: &[u8]) -> Vec<Msg<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = read_u32(buf, at) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        out.push(Msg {
            kind: read_u16(buf, at + 4),
            flags: read_u16(buf, at + 6),
            seq: read_u32(buf, at + 8),
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += align(len);
    }
    out
}

/// The batch spelled the way `nft --debug=netlink` prints the element messages it sends
/// (libnftnl's format: each 32-bit word of a key or data in host order, `%08x`): one
/// `(set, table, elements)` per element message. Decoded from the bytes, not from the model,
/// so golden tests compare what goes on the wire with what nft puts there.
pub fn debug_netlink(bytes: &[u8]) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for m in messages(bytes) {
        let kind = m.kind & 0xff;
        if m.kind >> 8 != NFNL_SUBSYS_NFTABLES
            || !(kind == NFT_MSG_NEWSETELEM || kind == NFT_MSG_DELSETELEM)
        {
            continue;
        }
        let Some(body) = m.payload.get(NFGENMSG_LEN..) else {
            continue;
        };
        let (mut table, mut set, mut elements) = (String::new(), String::new(), Vec::new());
        for (kind, payload) in attrs(body) {
            match kind {
                NFTA_SET_ELEM_LIST_TABLE => table = c_str(payload),
                NFTA_SET_ELEM_LIST_SET => set = c_str(payload),
                NFTA_SET_ELEM_LIST_ELEMENTS => {
                    for (_, elem) in attrs(payload) {
                        elements.push(debug_element(elem));
                    }
                }
                _ => {}
            }
        }
        out.push((set, table, elements));
    }
    out
}

fn c_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// How errors name an element known only by its bytes (a stray one the kernel listed).
pub(crate) fn bytes_label(bytes: &[u8]) -> String {
    format!(
        "0x{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn words(bytes: &[u8]) -> String {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("{:08x} ", u32::from_ne_bytes(w))
        })
        .collect()
}

fn debug_element(elem: &[u8]) -> String {
    let (mut key, mut data, mut flags) = (String::new(), String::new(), 0u32);
    for (kind, payload) in attrs(elem) {
        match kind {
            NFTA_SET_ELEM_KEY => {
                for (k, v) in attrs(payload) {
                    if k == NFTA_DATA_VALUE {
                        key = words(v);
                    }
                }
            }
            NFTA_SET_ELEM_DATA => {
                for (k, v) in attrs(payload) {
                    match k {
                        NFTA_DATA_VALUE => data = words(v),
                        NFTA_DATA_VERDICT => data = debug_verdict(v),
                        _ => {}
                    }
                }
            }
            NFTA_SET_ELEM_FLAGS => flags = u32::from_be_bytes(word(payload)),
            _ => {}
        }
    }
    format!("element {key} : {data}{flags} [end]")
}

fn word(payload: &[u8]) -> [u8; 4] {
    let mut w = [0u8; 4];
    let n = payload.len().min(4);
    w[..n].copy_from_slice(&payload[..n]);
    w
}

fn debug_verdict(v: &[u8]) -> String {
    let (mut code, mut chain) = (None, None);
    for (k, payload) in attrs(v) {
        match k {
            NFTA_VERDICT_CODE => code = Some(i32::from_be_bytes(word(payload))),
            NFTA_VERDICT_CHAIN => chain = Some(c_str(payload)),
            _ => {}
        }
    }
    let name = match code {
        Some(0) => "drop",
        Some(1) => "accept",
        Some(-1) => "continue",
        Some(-2) => "break",
        Some(-3) => "jump",
        Some(-4) => "goto",
        Some(-5) => "return",
        _ => "unknown",
    };
    match chain {
        Some(c) => format!("{name} -> {c} "),
        None => format!("{name} "),
    }
}

/// A verdict-map element (for callers outside the model; see [`Verdict`]).
pub fn verdict_element(key: &[Value], verdict: Verdict) -> Result<RawElement, String> {
    let mut e = raw_key(key)?;
    e.label = format!("{} : {verdict:?}", e.label);
    e.data = ElementData::Verdict(verdict);
    Ok(e)
}

/// Only for docs and tests: the encoded form of an address.
pub fn addr_word(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

#[cfg(test)]
mod tests {
    use super::*;
    use routemesh_types::Proto;

    #[test]
    fn concatenations_pad_each_part_to_a_register() {
        let key = [
            Value::Addr(Ipv4Addr::new(10, 0, 0, 2)),
            Value::Proto(Proto::Tcp),
            Value::Port(80),
            Value::Int(2),
        ];
        let mut want = vec![10, 0, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0];
        want.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(concat_bytes(&key).unwrap(), want);
        assert_eq!(concat_bytes(&[Value::Port(80)]).unwrap(), vec![0, 80]);
    }

    #[test]
    fn refuses_what_it_cannot_encode() {
        let err = concat_bytes(&[Value::Iface("eth0".into())]).unwrap_err();
        assert!(err.contains("interface name"), "{err}");
        assert!(concat_bytes(&[]).is_err());
    }

    #[test]
    fn batch_has_begin_elements_end_and_renumbers() {
        let e = raw_element(&Element::key(vec![Value::Addr(Ipv4Addr::new(10, 0, 0, 1))])).unwrap();
        let parts = [SetElements {
            op: ElementOp::Add,
            table: "t",
            set: "s",
            elements: vec![e],
        }];
        let mut b = batch(&parts, 7);
        let msgs = messages(&b.bytes);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, vec![0x10, (10 << 8) | 12, 0x11]);
        assert_eq!(
            msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        b.renumber(100);
        let seqs: Vec<u32> = messages(&b.bytes).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![100, 101, 102]);
        assert_eq!(b.messages[0].seq, 101);
        assert_eq!(
            debug_netlink(&b.bytes),
            vec![(
                "s".to_string(),
                "t".to_string(),
                vec![format!(
                    "element {:08x}  : 0 [end]",
                    addr_word(Ipv4Addr::new(10, 0, 0, 1))
                )]
            )]
        );
    }
}
