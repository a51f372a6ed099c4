//! Set and map elements over netlink, in process: [`NftNetlink`] sends a transaction made only
//! of element additions and deletions as one nfnetlink batch on a socket it keeps open in the
//! namespace, and hands everything else (tables, chains, rules, new sets) to [`NftCmd`]
//! (`nft -f`), as before.
//!
//! ```text
//! Transaction --all AddElements/DeleteElements, every value encodable--> encode::batch
//!     |                                        --> NFNL_MSG_BATCH_BEGIN, NEWSETELEM/DELSETELEM.., END
//!     |                                        --> NETLINK_NETFILTER socket (one per namespace)
//!     +--anything structural, or an element shape without encoding----> NftCmd (nft -f -)
//! ```
//!
//! Choices:
//! - Every element message carries `NLM_F_ACK`, so the kernel answers each one: a refusal
//!   names its table, set and operation, and (from the extended ACK's attribute offset) the
//!   element. The kernel processes the whole batch inside `sendmsg` and aborts all of it on
//!   any error, so the answers are read without waiting, and success means every element
//!   message was answered with 0.
//! - The socket is opened on a short-lived thread that entered the namespace, and stays bound
//!   to it. Before each batch the namespace file's identity (nsfs device and inode) is
//!   compared with the socket's: a namespace deleted and made again at the same path gets a
//!   new socket rather than a ghost.
//! - A transaction that only sets the contents of sets (each [`crate::Op::FlushCollection`]
//!   followed by that set's [`crate::Op::AddElements`], what a resync sends) is sent as the
//!   difference: each set is listed over netlink (an element dump; no `nft`), compared with
//!   the elements wanted, and one batch deletes the strays and adds what is missing or
//!   different (nothing at all when nothing drifted). The result is the same as the flush
//!   and the adds, without the kernel deleting and inserting every element again. When a
//!   listing fails (a set missing, a dump interrupted by a change) the flush and the adds
//!   are sent as they are.
//! - When the socket cannot be opened, the batch does not fit its buffer, or `sendmsg` fails
//!   (the kernel saw nothing), the same transaction goes through `nft -f` instead. A refusal
//!   by the kernel is returned as it is: `nft -f` would be refused the same way.

pub mod encode;
mod socket;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;

use crate::check;
use crate::error::{netns_label, NftError};
use crate::exec::{Executor, NftCmd, RuleBytes, Step};
use crate::model::Element;
use crate::txn::{Op, Transaction};

pub use encode::{ElementData, RawElement, SetElements, Verdict};
use socket::{NfSocket, NsId, SendError, THREAD_NETNS};

/// Adding elements to a set or map, or deleting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementOp {
    Add,
    Delete,
    /// Deleting every element (`flush set`): one `NFT_MSG_DELSETELEM` without elements.
    Flush,
}

impl fmt::Display for ElementOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElementOp::Add => "adding elements to",
            ElementOp::Delete => "deleting elements from",
            ElementOp::Flush => "flushing",
        })
    }
}

/// What an errno from the kernel means for an element message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ENOENT`: the table or set is missing, or (deleting) the element is.
    NotFound,
    /// `EEXIST`: the element is already there.
    Exists,
    /// `EBUSY` on add: the key is there with other data.
    Clash,
    /// `EINVAL`, `ERANGE`, `EOPNOTSUPP`: the key or data does not fit the set's declaration.
    Invalid,
    /// `ENFILE`, `ENOSPC`: the set is full.
    Full,
    /// `EPERM`, `EACCES`: not allowed (no CAP_NET_ADMIN in the namespace).
    Denied,
    Other,
}

impl Refusal {
    pub fn of(errno: Errno, op: ElementOp) -> Refusal {
        match errno {
            Errno::ENOENT => Refusal::NotFound,
            Errno::EEXIST => Refusal::Exists,
            Errno::EBUSY if op == ElementOp::Add => Refusal::Clash,
            Errno::EINVAL | Errno::ERANGE | Errno::EOPNOTSUPP => Refusal::Invalid,
            Errno::ENFILE | Errno::ENOSPC => Refusal::Full,
            Errno::EPERM | Errno::EACCES => Refusal::Denied,
            _ => Refusal::Other,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "no such table, set or element",
            Refusal::Exists => "element exists",
            Refusal::Clash => "the key exists with other data",
            Refusal::Invalid => "key or data does not fit the set",
            Refusal::Full => "the set is full",
            Refusal::Denied => "not permitted",
            Refusal::Other => "refused",
        })
    }
}

fn element_note(element: &Option<String>) -> String {
    element
        .as_ref()
        .map(|e| format!(" (element {e})"))
        .unwrap_or_default()
}

fn message_note(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// The kernel's refusal of one element message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nft netlink in {netns}: {op} set ip {table} {set}{}: {reason} ({errno}){}", element_note(.element), message_note(.message))]
pub struct Refused {
    pub netns: String,
    pub table: String,
    pub set: String,
    pub op: ElementOp,
    /// The element the kernel pointed at, when it did.
    pub element: Option<String>,
    pub reason: Refusal,
    pub errno: Errno,
    /// The kernel's extended-ACK message, when it gave one.
    pub message: Option<String>,
}

/// What can go wrong sending elements over netlink. Every variant names the namespace, or
/// the table, set and operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// An element routemesh cannot encode here (an interval, an interface name...); nothing
    /// was sent. [`NftNetlink`] sends such a transaction with `nft -f`.
    #[error("nft netlink: {op} set ip {table} {set}: {detail}")]
    Unsupported {
        table: String,
        set: String,
        op: ElementOp,
        detail: String,
    },
    /// The transaction changes more than elements (tables, chains, rules, sets): it is
    /// `nft -f`'s to send. Nothing was sent.
    #[error("nft netlink: the transaction on table {tables} is not element-only")]
    Structural { tables: String },
    /// The kernel refused an element message: the whole batch was aborted, nothing changed.
    #[error(transparent)]
    Refused(Box<Refused>),
    /// The kernel refused the batch as a whole (it could not take or commit it); nothing
    /// changed.
    #[error("nft netlink in {netns}: the batch was refused ({errno}){}", message_note(.message))]
    BatchRefused {
        netns: String,
        errno: Errno,
        message: Option<String>,
    },
    /// The batch is bigger than the socket can send, even after growing its buffer; nothing
    /// was sent ([`NftNetlink`] then uses `nft -f`).
    #[error("nft netlink in {netns}: a batch of {bytes} bytes does not fit the socket: {source}")]
    TooLarge {
        netns: String,
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    /// Opening the namespace or the socket, or reading the answers, failed.
    #[error("nft netlink in {netns}: {op}: {source}")]
    Io {
        netns: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answers did not add up (a message left unanswered).
    #[error("nft netlink in {netns}: {detail}")]
    Protocol { netns: String, detail: String },
}

impl NetlinkError {
    /// Whether the kernel said no (nothing of the batch was applied).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            NetlinkError::Refused(_) | NetlinkError::BatchRefused { .. }
        )
    }
}

/// Which way [`NftNetlink`] sent a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One netlink batch.
    Netlink,
    /// `nft -f -`: structural, an element shape without encoding, or no socket.
    Text,
}

/// An [`Executor`] that sends element-only transactions over netlink and the rest with
/// `nft -f`. Use it where [`NftCmd::in_netns`] is used; one per namespace.
#[derive(Debug)]
pub struct NftNetlink {
    text: NftCmd,
    socket: Mutex<Option<NfSocket>>,
}

impl NftNetlink {
    /// In the namespace of the calling thread.
    pub fn current() -> NftNetlink {
        NftNetlink::with_text(NftCmd::current())
    }

    /// In the namespace whose file is `netns` (`/run/netns/x`, a bind mount of a namespace,
    /// or `/proc/PID/ns/net`).
    pub fn in_netns(netns: impl Into<PathBuf>) -> NftNetlink {
        NftNetlink::with_text(NftCmd::in_netns(netns))
    }

    /// Around a given text executor (another nft binary, say); its namespace is used.
    pub fn with_text(text: NftCmd) -> NftNetlink {
        NftNetlink {
            text,
            socket: Mutex::new(None),
        }
    }

    /// The `nft -f` executor structural transactions go to.
    pub fn text(&self) -> &NftCmd {
        &self.text
    }

    pub fn netns(&self) -> Option<&Path> {
        self.text.netns()
    }

    fn label(&self) -> String {
        netns_label(self.text.netns())
    }

    fn lock(&self) -> MutexGuard<'_, Option<NfSocket>> {
        self.socket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `txn` and says which way it went.
    pub fn apply_routed(&self, txn: &Transaction) -> Result<Route, NftError> {
        check::transaction(txn)?;
        if let Some(sets) = set_contents(txn) {
            match self.send_contents(&sets) {
                Ok(()) => return Ok(Route::Netlink),
                Err(e) if e.is_rejection() => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(error = %e, "nft netlink: sending the flushes and elements as they are");
                }
            }
        }
        let parts = match encode::transaction_parts(txn) {
            Ok(Some(parts)) => parts,
            Ok(None) => {
                self.text.apply(txn)?;
                return Ok(Route::Text);
            }
            Err(e) => {
                tracing::debug!(error = %e, "elements without netlink encoding; using nft -f");
                self.text.apply(txn)?;
                return Ok(Route::Text);
            }
        };
        let mut batch = encode::batch(&parts, 0);
        if batch.messages.is_empty() {
            return Ok(Route::Netlink);
        }
        match self.send(&mut batch) {
            Ok(()) => Ok(Route::Netlink),
            Err(SendError::After(e @ NetlinkError::TooLarge { .. })) => {
                // Nothing was sent: nft -f splits what one socket buffer cannot hold.
                tracing::warn!(error = %e, "nft netlink batch too large; using nft -f");
                self.text.apply(txn)?;
                Ok(Route::Text)
            }
            Err(SendError::After(e)) => Err(e.into()),
            Err(SendError::NotSent(source)) => {
                tracing::warn!(
                    netns = %self.label(),
                    error = %source,
                    "nft netlink batch not sent; using nft -f"
                );
                self.text.apply(txn)?;
                Ok(Route::Text)
            }
        }
    }

    /// Sends an element-only transaction over netlink, never falling back to `nft -f`
    /// (tests and benchmarks; product code calls [`Executor::apply`]).
    pub fn apply_elements(&self, txn: &Transaction) -> Result<(), NetlinkError> {
        let parts = encode::transaction_parts(txn)?.ok_or_else(|| NetlinkError::Structural {
            tables: txn.tables().join(", "),
        })?;
        self.send_parts(&parts)
    }

    /// Sends hand-made element messages (a verdict map, say) as one batch.
    pub fn send_parts(&self, parts: &[SetElements<'_>]) -> Result<(), NetlinkError> {
        let mut batch = encode::batch(parts, 0);
        if batch.messages.is_empty() {
            return Ok(());
        }
        self.send(&mut batch).map_err(|e| match e {
            SendError::After(e) => e,
            SendError::NotSent(source) => NetlinkError::Io {
                netns: self.label(),
                op: "sending the batch".to_string(),
                source,
            },
        })
    }

    /// Every rule of `table` as the kernel holds it, in chain order: (chain, the kernel's
    /// encoding of its expressions). Read on the namespace's socket (a netlink dump); the
    /// same rule added again reads the same, so owners compare these to find rules that
    /// drifted.
    pub fn rules(&self, table: &str) -> Result<Vec<RuleBytes>, NetlinkError> {
        self.read(|sock, label| sock.dump_rules(table, label))
    }

    /// Runs a read (a dump) on the namespace's socket, opening it when needed; a socket whose
    /// read failed is not trusted again.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut NfSocket, &str) -> Result<T, NetlinkError>,
    ) -> Result<T, NetlinkError> {
        let label = self.label();
        let mut guard = self.socket_guard().map_err(|source| NetlinkError::Io {
            netns: label.clone(),
            op: "opening the nft netlink socket".to_string(),
            source,
        })?;
        let Some(sock) = guard.as_mut() else {
            return Err(NetlinkError::Protocol {
                netns: label,
                detail: "no socket".to_string(),
            });
        };
        let result = f(sock, &label);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Gives each set exactly `elements`: lists it, then one batch with the difference.
    fn send_contents(&self, sets: &[SetContents<'_>]) -> Result<(), NetlinkError> {
        let parts = self.contents_parts(sets)?;
        self.send_parts(&parts)
    }

    /// The element messages that give each set exactly its wanted elements: each set listed,
    /// compared, the strays deleted and the missing or changed added.
    fn contents_parts<'a>(
        &self,
        sets: &[SetContents<'a>],
    ) -> Result<Vec<SetElements<'a>>, NetlinkError> {
        let listed = self.read(|sock, label| {
            sets.iter()
                .map(|set| sock.dump_elements(set.table, set.set, label))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut parts = Vec::new();
        for (set, have) in sets.iter().zip(listed) {
            let (gone, came) = difference(set, &have)?;
            if !gone.is_empty() {
                parts.push(SetElements {
                    op: ElementOp::Delete,
                    table: set.table,
                    set: set.set,
                    elements: gone,
                });
            }
            if !came.is_empty() {
                parts.push(SetElements {
                    op: ElementOp::Add,
                    table: set.table,
                    set: set.set,
                    elements: came,
                });
            }
        }
        Ok(parts)
    }

    /// The namespace's socket, opened (again) when needed.
    fn socket_guard(&self) -> std::io::Result<MutexGuard<'_, Option<NfSocket>>> {
        let label = self.label();
        let ns_path = self.text.netns().unwrap_or(Path::new(THREAD_NETNS));
        let mut guard = self.lock();
        let current = NsId::of(ns_path)?;
        if guard.as_ref().is_some_and(|s| s.ns != current) {
            tracing::info!(netns = %label, "namespace changed under its path; new nft netlink socket");
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(NfSocket::open(self.text.netns())?);
        }
        Ok(guard)
    }

    /// Sends on the namespace's socket, opening it (again) when needed.
    fn send(&self, batch: &mut encode::Batch) -> Result<(), SendError> {
        let label = self.label();
        let mut guard = self.socket_guard().map_err(SendError::NotSent)?;
        let Some(sock) = guard.as_mut() else {
            return Err(SendError::NotSent(std::io::Error::other("no socket")));
        };
        let result = sock.send(batch, &label);
        if let Err(SendError::NotSent(_) | SendError::After(NetlinkError::Io { .. })) = &result {
            // A socket that failed is not trusted again.
            *guard = None;
        }
        result
    }
}

/// One set's wanted contents.
struct SetContents<'a> {
    table: &'a str,
    set: &'a str,
    elements: Vec<&'a Element>,
}

/// The sets whose contents `txn` sets (each flushed, then given its elements), when that is
/// all it does.
fn set_contents(txn: &Transaction) -> Option<Vec<SetContents<'_>>> {
    let mut sets: Vec<SetContents<'_>> = Vec::new();
    for op in &txn.ops {
        match op {
            Op::FlushCollection { table, name, .. } => {
                if sets.iter().any(|s| s.table == table && s.set == name) {
                    return None;
                }
                sets.push(SetContents {
                    table,
                    set: name,
                    elements: Vec::new(),
                });
            }
            Op::AddElements {
                table,
                collection,
                elements,
            } => {
                let last = sets.last_mut()?;
                if last.table != table || last.set != collection {
                    return None;
                }
                last.elements.extend(elements);
            }
            _ => return None,
        }
    }
    (!sets.is_empty()).then_some(sets)
}

/// FNV-1a: keys are a few bytes each, and tens of thousands are looked up per resync.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// What to delete (the kernel's keys, as listed) and add so that the set holds exactly the
/// wanted elements; `payloads` is the set's listing.
fn difference(
    set: &SetContents<'_>,
    payloads: &[Vec<u8>],
) -> Result<(Vec<RawElement>, Vec<RawElement>), NetlinkError> {
    let unsupported = |detail: String| NetlinkError::Unsupported {
        table: set.table.to_string(),
        set: set.set.to_string(),
        op: ElementOp::Add,
        detail,
    };
    let mut have = Vec::with_capacity(set.elements.len());
    for payload in payloads {
        encode::listed_elements(payload, &mut have);
    }
    let mut listed: FnvMap<&[u8], Option<&[u8]>> = FnvMap::default();
    listed.reserve(have.len());
    listed.extend(have);
    let stray = |key: &[u8]| RawElement {
        label: encode::bytes_label(key),
        key: key.to_vec(),
        data: ElementData::None,
    };
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut key, mut data) = (Vec::new(), Vec::new());
    for e in &set.elements {
        encode::concat_into(&e.key, &mut key).map_err(&unsupported)?;
        match listed.remove_entry(key.as_slice()) {
            None => came.push(encode::raw_element(e).map_err(&unsupported)?),
            Some((k, d)) => {
                let same = match (d, e.data.is_empty()) {
                    (None, true) => true,
                    (Some(d), false) => {
                        encode::concat_into(&e.data, &mut data).map_err(&unsupported)?;
                        d == data.as_slice()
                    }
                    _ => false,
                };
                if !same {
                    gone.push(stray(k));
                    came.push(encode::raw_element(e).map_err(&unsupported)?);
                }
            }
        }
    }
    // What is left was not wanted.
    gone.extend(listed.into_keys().map(stray));
    Ok((gone, came))
}

impl Executor for NftNetlink {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        self.apply_routed(txn).map(|_| ())
    }

    fn rules(&self, table: &str) -> Option<Result<Vec<RuleBytes>, NftError>> {
        Some(NftNetlink::rules(self, table).map_err(NftError::from))
    }

    /// When `second` sets the contents of sets (a resync's elements), its sets are listed
    /// and compared on this thread while `first` (a resync's structure, `nft -f`) runs on
    /// another; the difference is sent once `first` succeeded. `first` does not change the
    /// elements of sets that exist, so the listing stays true; when it fails (a set `first`
    /// makes, a dump interrupted by `first`'s commit) `second` is applied afterwards as
    /// usual, listing again.
    fn apply_then(
        &self,
        first: &Transaction,
        second: &Transaction,
    ) -> Result<(), (Step, NftError)> {
        let Some(sets) = set_contents(second) else {
            self.apply(first).map_err(|e| (Step::First, e))?;
            return self.apply(second).map_err(|e| (Step::Second, e));
        };
        check::transaction(second).map_err(|e| (Step::Second, e))?;
        let (done, prepared) = std::thread::scope(|scope| {
            let first_thread = scope.spawn(|| self.apply_routed(first));
            let prepared = self.contents_parts(&sets);
            let done = first_thread.join().unwrap_or_else(|_| {
                Err(NftError::Io {
                    netns: self.label(),
                    op: "applying the first of two transactions".to_string(),
                    source: std::io::Error::other("the thread applying it panicked"),
                })
            });
            (done, prepared)
        });
        done.map_err(|e| (Step::First, e))?;
        match prepared {
            Ok(parts) => self
                .send_parts(&parts)
                .map_err(|e| (Step::Second, NftError::from(e))),
            Err(e) => {
                tracing::debug!(error = %e, "nft netlink: listing the sets again after the first transaction");
                self.apply(second).map_err(|e| (Step::Second, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{CollectionKind, Value};

    fn flush(set: &str) -> Op {
        Op::FlushCollection {
            table: "t".into(),
            kind: CollectionKind::Set,
            name: set.into(),
        }
    }

    fn add(set: &str, last: u8) -> Op {
        Op::AddElements {
            table: "t".into(),
            collection: set.into(),
            elements: vec![Element::key(vec![Value::Addr(Ipv4Addr::new(
                10, 0, 0, last,
            ))])],
        }
    }

    #[test]
    fn only_flushes_followed_by_their_own_elements_set_contents() {
        let txn = |ops: Vec<Op>| Transaction { ops };
        let contents = txn(vec![flush("a"), add("a", 1), add("a", 2), flush("b")]);
        let sets = set_contents(&contents).unwrap();
        assert_eq!(
            sets.iter()
                .map(|s| (s.set, s.elements.len()))
                .collect::<Vec<_>>(),
            vec![("a", 2), ("b", 0)]
        );
        // Elements of another set, elements before any flush, a set flushed twice, or
        // anything else: sent as they are.
        assert!(set_contents(&txn(vec![flush("a"), add("b", 1)])).is_none());
        assert!(set_contents(&txn(vec![add("a", 1), flush("a")])).is_none());
        assert!(set_contents(&txn(vec![flush("a"), flush("a")])).is_none());
        assert!(set_contents(&txn(vec![flush("a"), Op::AddTable { table: "t".into() }])).is_none());
        assert!(set_contents(&txn(vec![])).is_none());
    }

    #[test]
    fn the_difference_deletes_strays_by_the_kernels_key_and_adds_what_differs() {
        let e = |last: u8, to: u8| {
            Element::mapping(
                vec![Value::Addr(Ipv4Addr::new(10, 0, 0, last))],
                vec![Value::Addr(Ipv4Addr::new(10, 1, 0, to))],
            )
        };
        let wanted = [e(1, 1), e(2, 2), e(3, 3)];
        let set = SetContents {
            table: "t",
            set: "m",
            elements: wanted.iter().collect(),
        };
        // A listing as the kernel sends it: 10.0.0.1 -> 10.1.0.1 (kept), 10.0.0.2 -> 10.1.0.9
        // (changed), 10.0.0.7 (stray); 10.0.0.3 missing.
        fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
            let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(payload);
            out.resize(out.len().next_multiple_of(4), 0);
            out
        }
        let mut elements = Vec::new();
        for (k, d) in [(1u8, 1u8), (2, 9), (7, 7)] {
            // NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }, NFTA_SET_ELEM_DATA { .. } }
            let key = nla(1, &nla(1, &[10, 0, 0, k]));
            let data = nla(2, &nla(1, &[10, 1, 0, d]));
            elements.extend(nla(1, &[key, data].concat()));
        }
        // NFTA_SET_ELEM_LIST_ELEMENTS
        let listing = nla(3, &elements);
        let (gone, came) = difference(&set, &[listing]).unwrap();
        let keys = |v: &[RawElement]| v.iter().map(|r| r.key[3]).collect::<Vec<_>>();
        assert_eq!(keys(&gone), vec![2, 7]);
        assert_eq!(gone[1].label, "0x0a000007");
        assert_eq!(keys(&came), vec![2, 3]);
    }
}
