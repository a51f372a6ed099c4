//! XFRM (IPsec) programming for encrypted overlays, over a NETLINK_XFRM socket (never `ip xfrm`).
//!
//! An encrypted overlay carries its VXLAN (UDP 4789) between each pair of nodes in ESP,
//! transport mode, AES-GCM (`rfc4106(gcm(aes))`: 128-bit key + 4-byte salt, 128-bit ICV). Only
//! the VXLAN packets of encrypted networks are encrypted: an nftables rule elsewhere marks them,
//! and the outbound policy ([`VxlanPolicy`]) matches that mark exactly.
//!
//! Everything routemesh makes carries [`REQID`] (SAs in `reqid`, policies in their template's
//! `reqid`): that is how [`Xfrm::read`], [`Xfrm::sync`] and [`Xfrm::flush`] tell ours from
//! anyone else's. Messages are encoded here from the struct layouts of `<linux/xfrm.h>`; the
//! unit tests pin every offset with golden bytes captured from iproute2.
//!
//! Blocking I/O: callers on tokio use `spawn_blocking`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::netns;

/// reqid stamped on every SA and policy template routemesh makes: identifies ours in dumps.
pub const REQID: u32 = 0x726d_0001;
/// The UDP port of VXLAN, the only traffic the policies select.
pub const VXLAN_PORT: u16 = 4789;
/// The AEAD algorithm of every SA: AES-GCM for ESP (RFC 4106).
pub const AEAD_ALG: &str = "rfc4106(gcm(aes))";
/// ICV (authentication tag) length of the AEAD, in bits.
pub const ICV_BITS: u32 = 128;
/// Key bytes of an SA: the 128-bit AES key followed by the 4-byte salt.
pub const KEY_LEN: usize = 20;
/// Anti-replay window of our SAs, in packets.
pub const REPLAY_WINDOW: u8 = 32;

/// One ESP SA (one direction between two nodes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EspSa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    /// AES-128 key (16 bytes) then salt (4 bytes).
    pub key: [u8; KEY_LEN],
}

/// An outbound policy: UDP from `src` to `dst` port 4789 carrying firewall mark `mark` (mask
/// 0xffffffff) goes through ESP transport mode from `src` to `dst`, template reqid [`REQID`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanPolicy {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub mark: u32,
}

/// The whole IPsec state routemesh wants in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpsecSpec {
    pub sas: Vec<EspSa>,
    pub policies: Vec<VxlanPolicy>,
}

// Netlink framing (<linux/netlink.h>).
const NETLINK_XFRM: libc::c_int = 6;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

// XFRM messages and attributes (<linux/xfrm.h>).
const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_DELSA: u16 = 0x11;
const XFRM_MSG_GETSA: u16 = 0x12;
const XFRM_MSG_NEWPOLICY: u16 = 0x13;
const XFRM_MSG_DELPOLICY: u16 = 0x14;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const XFRM_MSG_UPDPOLICY: u16 = 0x19;
const XFRMA_TMPL: u16 = 5;
const XFRMA_SRCADDR: u16 = 13;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_MARK: u16 = 21;

const AF_INET: u16 = libc::AF_INET as u16;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_UDP: u8 = 17;
const XFRM_MODE_TRANSPORT: u8 = 0;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_ALLOW: u8 = 0;
const XFRM_INF: u64 = u64::MAX;

// Struct sizes and offsets (checked against /usr/include/linux/xfrm.h with offsetof).
const ADDR_LEN: usize = 16; // xfrm_address_t
const SELECTOR_LEN: usize = 56; // xfrm_selector
const SEL_DADDR: usize = 0;
const SEL_SADDR: usize = 16;
const SEL_DPORT: usize = 32;
const SEL_DPORT_MASK: usize = 34;
const SEL_SPORT: usize = 36;
const SEL_SPORT_MASK: usize = 38;
const SEL_FAMILY: usize = 40;
const SEL_PREFIXLEN_D: usize = 42;
const SEL_PREFIXLEN_S: usize = 43;
const SEL_PROTO: usize = 44;
const ID_LEN: usize = 24; // xfrm_id
const ID_DADDR: usize = 0;
const ID_SPI: usize = 16;
const ID_PROTO: usize = 20;
const LIFETIME_CFG_LEN: usize = 64; // xfrm_lifetime_cfg: soft/hard byte/packet limits first
const USERSA_INFO_LEN: usize = 224; // xfrm_usersa_info
const SA_SEL: usize = 0;
const SA_ID: usize = 56;
const SA_SADDR: usize = 80;
const SA_LFT: usize = 96;
const SA_REQID: usize = 208;
const SA_FAMILY: usize = 212;
const SA_MODE: usize = 214;
const SA_REPLAY_WINDOW: usize = 215;
const USERPOLICY_INFO_LEN: usize = 168; // xfrm_userpolicy_info
const POL_SEL: usize = 0;
const POL_LFT: usize = 56;
const POL_INDEX: usize = 156;
const POL_DIR: usize = 160;
const POL_ACTION: usize = 161;
const USER_TMPL_LEN: usize = 64; // xfrm_user_tmpl
const TMPL_ID: usize = 0;
const TMPL_FAMILY: usize = 24;
const TMPL_SADDR: usize = 28;
const TMPL_REQID: usize = 44;
const TMPL_MODE: usize = 48;
const TMPL_AALGOS: usize = 52;
const TMPL_EALGOS: usize = 56;
const TMPL_CALGOS: usize = 60;
const USERSA_ID_LEN: usize = 24; // xfrm_usersa_id
const SAID_DADDR: usize = 0;
const SAID_SPI: usize = 16;
const SAID_FAMILY: usize = 20;
const SAID_PROTO: usize = 22;
const USERPOLICY_ID_LEN: usize = 64; // xfrm_userpolicy_id
const POLID_INDEX: usize = 56;
const POLID_DIR: usize = 60;
const ALGO_AEAD_LEN: usize = 72; // xfrm_algo_aead without the key
const AEAD_NAME_LEN: usize = 64;
const AEAD_KEY_LEN: usize = 64;
const AEAD_ICV_LEN: usize = 68;
const MARK_LEN: usize = 8; // xfrm_mark

// The layouts chain as in the header: each field starts where the previous struct ends.
const _: () = {
    assert!(SA_ID == SA_SEL + SELECTOR_LEN);
    assert!(SA_SADDR == SA_ID + ID_LEN);
    assert!(SA_LFT == SA_SADDR + ADDR_LEN);
    assert!(POL_LFT == POL_SEL + SELECTOR_LEN);
    assert!(TMPL_FAMILY == TMPL_ID + ID_LEN);
    assert!(USERPOLICY_ID_LEN == SELECTOR_LEN + 8);
    assert!(LIFETIME_CFG_LEN == 8 * 8);
    assert!(AEAD_KEY_LEN == AEAD_NAME_LEN);
};

const RECV_BUF: usize = 64 * 1024;
const RECV_TIMEOUT_SECS: libc::time_t = 30;

/// A NETLINK_XFRM socket bound inside one network namespace. Requests are serialized (one
/// request and its answer at a time), so an `Xfrm` may be shared between threads.
pub struct Xfrm {
    fd: OwnedFd,
    netns: String,
    seq: AtomicU32,
    io: Mutex<()>,
}

impl fmt::Debug for Xfrm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xfrm").field("netns", &self.netns).finish()
    }
}

impl Xfrm {
    /// Opens the socket inside `netns` (None: the current namespace). The socket stays bound
    /// to that namespace for its whole life.
    pub fn open(netns: Option<&Path>) -> Result<Xfrm> {
        let (fd, name) = match netns {
            Some(path) => (
                netns::run_in(path, open_socket)?,
                format!("netns {}", path.display()),
            ),
            None => (open_socket(), "the current netns".to_string()),
        };
        let fd = fd.map_err(|errno| Error::Xfrm {
            op: "opening NETLINK_XFRM socket".into(),
            object: format!("in {name}"),
            errno,
        })?;
        Ok(Xfrm {
            fd,
            netns: name,
            seq: AtomicU32::new(1),
            io: Mutex::new(()),
        })
    }

    /// Whether this kernel can hold our ESP SAs (esp4 and `rfc4106(gcm(aes))` present): adds
    /// then deletes a throwaway SA to 192.0.2.1 (TEST-NET-1).
    pub fn esp_supported(&self) -> Result<bool> {
        let probe = EspSa {
            src: Ipv4Addr::new(192, 0, 2, 2),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            spi: 0xfff0_0000 | (std::process::id() & 0xffff),
            key: [0x5a; KEY_LEN],
        };
        let id = SaId::of(&probe);
        match self.add_sa(&probe) {
            Ok(()) => {
                self.delete_sa(&id)?;
                Ok(true)
            }
            // A probe left behind by a crash: the kernel took it once, so ESP works.
            Err(Error::Xfrm {
                errno: Errno::EEXIST,
                ..
            }) => {
                self.delete_sa(&id)?;
                Ok(true)
            }
            // No esp4 (EPROTONOSUPPORT), no AEAD/GCM (ENOSYS), no AF_INET xfrm (EAFNOSUPPORT).
            Err(Error::Xfrm {
                errno: Errno::EPROTONOSUPPORT | Errno::ENOSYS | Errno::EAFNOSUPPORT,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Our SAs and policies (by [`REQID`]), keys included, sorted. Entries of ours that do not
    /// have the shape routemesh makes are left out (and removed by [`Xfrm::sync`]).
    pub fn read(&self) -> Result<IpsecSpec> {
        let mut sas: Vec<EspSa> = self.our_sas()?.into_iter().filter_map(|s| s.sa).collect();
        let mut policies: Vec<VxlanPolicy> = self
            .our_policies()?
            .into_iter()
            .filter_map(|p| p.policy)
            .collect();
        sas.sort();
        sas.dedup();
        policies.sort();
        policies.dedup();
        Ok(IpsecSpec { sas, policies })
    }

    /// Makes ours equal `want`: adds missing SAs first (an SA with the same src/dst/spi but
    /// another key is deleted and re-added), then updates wanted policies, then deletes our
    /// policies and SAs that are not wanted. A key rotation (new SPI) thus never leaves a moment
    /// without a valid SA. Stops at the first failure; a later sync continues from there.
    pub fn sync(&self, want: &IpsecSpec) -> Result<()> {
        validate(want)?;
        let sas = self.our_sas()?;
        let policies = self.our_policies()?;
        for step in plan(&sas, &policies, want) {
            self.apply(&step)?;
        }
        Ok(())
    }

    /// Deletes every policy and SA of ours (policies first); collects errors.
    pub fn flush(&self) -> Result<()> {
        let mut errors = Vec::new();
        match self.our_policies() {
            Ok(policies) => {
                for p in policies {
                    if let Err(e) = self.apply(&Step::DelPolicy(p.key)) {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        match self.our_sas() {
            Ok(sas) => {
                for s in sas {
                    if let Err(e) = self.apply(&Step::DelSa(s.id)) {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        Error::collect(errors)
    }

    fn apply(&self, step: &Step) -> Result<()> {
        match step {
            Step::AddSa(sa) => self.add_sa(sa),
            Step::DelSa(id) => self.delete_sa(id),
            Step::PutPolicy(p) => self.request(
                "updating",
                format!("{} in {}", describe_policy(p), self.netns),
                encode_upd_policy(p),
            ),
            Step::DelPolicy(key) => {
                let r = self.request(
                    "deleting",
                    format!("{key} in {}", self.netns),
                    encode_del_policy(key),
                );
                ignore_gone(r)
            }
        }
    }

    fn add_sa(&self, sa: &EspSa) -> Result<()> {
        self.request(
            "adding",
            format!("{} in {}", SaId::of(sa), self.netns),
            encode_new_sa(sa),
        )
    }

    fn delete_sa(&self, id: &SaId) -> Result<()> {
        let r = self.request(
            "deleting",
            format!("{id} in {}", self.netns),
            encode_del_sa(id),
        );
        ignore_gone(r)
    }

    fn our_sas(&self) -> Result<Vec<OurSa>> {
        let object = format!("SAs in {}", self.netns);
        let mut out = Vec::new();
        for (ty, payload) in self.dump(&object, XFRM_MSG_GETSA)? {
            if ty != XFRM_MSG_NEWSA {
                continue;
            }
            let sa = decode_sa(&payload).map_err(|detail| Error::XfrmReply {
                op: "dumping".into(),
                object: object.clone(),
                detail,
            })?;
            if let Some(ours) = sa.ours() {
                out.push(ours);
            }
        }
        Ok(out)
    }

    fn our_policies(&self) -> Result<Vec<OurPolicy>> {
        let object = format!("policies in {}", self.netns);
        let mut out = Vec::new();
        for (ty, payload) in self.dump(&object, XFRM_MSG_GETPOLICY)? {
            if ty != XFRM_MSG_NEWPOLICY {
                continue;
            }
            let p = decode_policy(&payload).map_err(|detail| Error::XfrmReply {
                op: "dumping".into(),
                object: object.clone(),
                detail,
            })?;
            if let Some(ours) = p.ours() {
                out.push(ours);
            }
        }
        Ok(out)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request with NLM_F_ACK and waits for its ACK or error.
    fn request(&self, op: &str, object: String, msg: Msg) -> Result<()> {
        let fail = |errno| Error::Xfrm {
            op: op.to_string(),
            object: object.clone(),
            errno,
        };
        let _io = self
            .io
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = self.next_seq();
        self.send(&msg.finish(seq)).map_err(fail)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self.recv(&mut buf).map_err(fail)?;
            for m in messages(&buf[..n]).map_err(|detail| Error::XfrmReply {
                op: op.to_string(),
                object: object.clone(),
                detail,
            })? {
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match error_code(m.payload) {
                    Some(0) => Ok(()),
                    Some(code) => Err(fail(Errno::from_raw(code.saturating_neg()))),
                    None => Err(Error::XfrmReply {
                        op: op.to_string(),
                        object,
                        detail: "short NLMSG_ERROR".into(),
                    }),
                };
            }
        }
    }

    /// Dumps one table (NLM_F_DUMP): every message's type and payload until NLMSG_DONE.
    fn dump(&self, object: &str, ty: u16) -> Result<Vec<(u16, Vec<u8>)>> {
        let fail = |errno| Error::Xfrm {
            op: "dumping".into(),
            object: object.to_string(),
            errno,
        };
        let malformed = |detail| Error::XfrmReply {
            op: "dumping".into(),
            object: object.to_string(),
            detail,
        };
        let _io = self
            .io
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = self.next_seq();
        let msg = Msg::new(ty, NLM_F_REQUEST | NLM_F_DUMP, &[]);
        self.send(&msg.finish(seq)).map_err(fail)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self.recv(&mut buf).map_err(fail)?;
            for m in messages(&buf[..n]).map_err(malformed)? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => {
                        return match error_code(m.payload) {
                            Some(code) if code < 0 => Err(fail(Errno::from_raw(-code))),
                            _ => Ok(out),
                        };
                    }
                    NLMSG_ERROR => {
                        return match error_code(m.payload) {
                            Some(0) => Ok(out),
                            Some(code) => Err(fail(Errno::from_raw(code.saturating_neg()))),
                            None => Err(malformed("short NLMSG_ERROR".into())),
                        };
                    }
                    _ => out.push((m.ty, m.payload.to_vec())),
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> std::result::Result<(), Errno> {
        loop {
            // SAFETY: the pointer and length describe `bytes`, alive for the call; an
            // unconnected netlink socket sends to the kernel (port 0).
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    e => return Err(e),
                }
            }
            return if n as usize == bytes.len() {
                Ok(())
            } else {
                Err(Errno::EMSGSIZE)
            };
        }
    }

    /// One datagram; a datagram longer than `buf` is an error (MSG_TRUNC gives its length).
    fn recv(&self, buf: &mut [u8]) -> std::result::Result<usize, Errno> {
        loop {
            // SAFETY: the pointer and length describe `buf`, alive and writable for the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    e => return Err(e),
                }
            }
            let n = n as usize;
            return if n > buf.len() {
                Err(Errno::EMSGSIZE)
            } else {
                Ok(n)
            };
        }
    }
}

fn ignore_gone(r: Result<()>) -> Result<()> {
    match r {
        Err(Error::Xfrm {
            errno: Errno::ESRCH | Errno::ENOENT,
            ..
        }) => Ok(()),
        r => r,
    }
}

fn open_socket() -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_XFRM,
        )
    };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value (pid 0: kernel assigns).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a valid sockaddr_nl and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // A kernel that never answers must not hang the caller forever.
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: `timeout` is a valid timeval and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

fn validate(want: &IpsecSpec) -> Result<()> {
    for sa in &want.sas {
        if want
            .sas
            .iter()
            .any(|o| SaId::of(o) == SaId::of(sa) && o.key != sa.key)
        {
            return Err(Error::Invalid {
                what: "IPsec spec".into(),
                detail: format!("{} wanted with two different keys", SaId::of(sa)),
            });
        }
        if sa.spi < 256 {
            return Err(Error::Invalid {
                what: "IPsec spec".into(),
                detail: format!("{}: SPIs 0-255 are reserved", SaId::of(sa)),
            });
        }
    }
    Ok(())
}

// ---- plan ----

/// Identifies one SA for deletion.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SaId {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    spi: u32,
    mark: Option<(u32, u32)>,
}

impl SaId {
    fn of(sa: &EspSa) -> SaId {
        SaId {
            src: sa.src,
            dst: sa.dst,
            spi: sa.spi,
            mark: None,
        }
    }
}

impl fmt::Display for SaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ESP SA {}→{} spi 0x{:08x}", self.src, self.dst, self.spi)
    }
}

/// Identifies one dumped policy for deletion (by its kernel index).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PolicyKey {
    index: u32,
    dir: u8,
    mark: Option<(u32, u32)>,
    /// What it selects, for messages.
    what: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {} (index {})", self.what, self.index)
    }
}

fn describe_policy(p: &VxlanPolicy) -> String {
    format!(
        "policy out {}→{} udp dport {VXLAN_PORT} mark 0x{:x}",
        p.src, p.dst, p.mark
    )
}

/// One of our SAs as dumped; `sa` is None when it is not in the shape we make.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OurSa {
    id: SaId,
    sa: Option<EspSa>,
}

/// One of our policies as dumped; `policy` is None when it is not in the shape we make.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OurPolicy {
    key: PolicyKey,
    policy: Option<VxlanPolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    AddSa(EspSa),
    DelSa(SaId),
    PutPolicy(VxlanPolicy),
    DelPolicy(PolicyKey),
}

/// The requests that turn `have` into `want`, in order: SAs added (a same-ID SA with another
/// key deleted just before), policies put, then unwanted policies and SAs deleted.
fn plan(have_sas: &[OurSa], have_policies: &[OurPolicy], want: &IpsecSpec) -> Vec<Step> {
    let want_sas: BTreeSet<&EspSa> = want.sas.iter().collect();
    let want_policies: BTreeSet<&VxlanPolicy> = want.policies.iter().collect();
    let mut steps = Vec::new();
    let mut replaced: BTreeSet<SaId> = BTreeSet::new();
    for sa in &want_sas {
        if have_sas.iter().any(|h| h.sa.as_ref() == Some(*sa)) {
            continue;
        }
        for h in have_sas {
            let same_id = h.id.src == sa.src && h.id.dst == sa.dst && h.id.spi == sa.spi;
            if same_id && replaced.insert(h.id.clone()) {
                steps.push(Step::DelSa(h.id.clone()));
            }
        }
        steps.push(Step::AddSa((*sa).clone()));
    }
    for p in &want_policies {
        if !have_policies.iter().any(|h| h.policy.as_ref() == Some(*p)) {
            steps.push(Step::PutPolicy((*p).clone()));
        }
    }
    for h in have_policies {
        if !h.policy.as_ref().is_some_and(|p| want_policies.contains(p)) {
            steps.push(Step::DelPolicy(h.key.clone()));
        }
    }
    for h in have_sas {
        let wanted = h.sa.as_ref().is_some_and(|s| want_sas.contains(s));
        if !wanted && !replaced.contains(&h.id) {
            steps.push(Step::DelSa(h.id.clone()));
        }
    }
    steps
}

// ---- encoding ----

/// A netlink message being built: header (length and seq filled by `finish`), body, attrs.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16, body: &[u8]) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        put_u16(&mut buf, 4, ty);
        put_u16(&mut buf, 6, flags);
        buf.extend_from_slice(body);
        pad4(&mut buf);
        Msg { buf }
    }

    fn attr(mut self, ty: u16, payload: &[u8]) -> Msg {
        let start = self.buf.len();
        self.buf.resize(start + NLA_HDRLEN, 0);
        put_u16(&mut self.buf, start, (NLA_HDRLEN + payload.len()) as u16);
        put_u16(&mut self.buf, start + 2, ty);
        self.buf.extend_from_slice(payload);
        pad4(&mut self.buf);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        put_u32(&mut self.buf, 0, len);
        put_u32(&mut self.buf, 8, seq);
        self.buf
    }
}

fn pad4(buf: &mut Vec<u8>) {
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_ne_bytes());
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn put_addr(buf: &mut [u8], off: usize, a: Ipv4Addr) {
    buf[off..off + 4].copy_from_slice(&a.octets());
}

/// No byte or packet limits (XFRM_INF), no time limits, as `ip xfrm` sets them.
fn put_no_limits(buf: &mut [u8], off: usize) {
    for i in 0..4 {
        put_u64(buf, off + 8 * i, XFRM_INF);
    }
}

fn mark_bytes(v: u32, m: u32) -> [u8; MARK_LEN] {
    let mut b = [0u8; MARK_LEN];
    put_u32(&mut b, 0, v);
    put_u32(&mut b, 4, m);
    b
}

/// XFRM_MSG_NEWSA: xfrm_usersa_info (selector left empty: the kernel takes the family) and
/// XFRMA_ALG_AEAD.
fn encode_new_sa(sa: &EspSa) -> Msg {
    let mut info = [0u8; USERSA_INFO_LEN];
    put_addr(&mut info, SA_ID + ID_DADDR, sa.dst);
    info[SA_ID + ID_SPI..SA_ID + ID_SPI + 4].copy_from_slice(&sa.spi.to_be_bytes());
    info[SA_ID + ID_PROTO] = IPPROTO_ESP;
    put_addr(&mut info, SA_SADDR, sa.src);
    put_no_limits(&mut info, SA_LFT);
    put_u32(&mut info, SA_REQID, REQID);
    put_u16(&mut info, SA_FAMILY, AF_INET);
    info[SA_MODE] = XFRM_MODE_TRANSPORT;
    info[SA_REPLAY_WINDOW] = REPLAY_WINDOW;
    let mut aead = vec![0u8; ALGO_AEAD_LEN + KEY_LEN];
    aead[..AEAD_ALG.len()].copy_from_slice(AEAD_ALG.as_bytes());
    put_u32(&mut aead, AEAD_KEY_LEN, (KEY_LEN * 8) as u32);
    put_u32(&mut aead, AEAD_ICV_LEN, ICV_BITS);
    aead[ALGO_AEAD_LEN..].copy_from_slice(&sa.key);
    Msg::new(XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK, &info).attr(XFRMA_ALG_AEAD, &aead)
}

/// XFRM_MSG_DELSA: xfrm_usersa_id, XFRMA_SRCADDR (so only the exact SA goes) and the mark
/// if the SA has one.
fn encode_del_sa(id: &SaId) -> Msg {
    let mut body = [0u8; USERSA_ID_LEN];
    put_addr(&mut body, SAID_DADDR, id.dst);
    body[SAID_SPI..SAID_SPI + 4].copy_from_slice(&id.spi.to_be_bytes());
    put_u16(&mut body, SAID_FAMILY, AF_INET);
    body[SAID_PROTO] = IPPROTO_ESP;
    let mut src = [0u8; ADDR_LEN];
    put_addr(&mut src, 0, id.src);
    let msg = Msg::new(XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, &body).attr(XFRMA_SRCADDR, &src);
    match id.mark {
        Some((v, m)) => msg.attr(XFRMA_MARK, &mark_bytes(v, m)),
        None => msg,
    }
}

/// XFRM_MSG_UPDPOLICY: dir out, selector src/32 dst/32 udp dport 4789, allow, one ESP
/// transport template (any algorithm, reqid REQID), exact mark.
fn encode_upd_policy(p: &VxlanPolicy) -> Msg {
    let mut info = [0u8; USERPOLICY_INFO_LEN];
    let sel = POL_SEL;
    put_addr(&mut info, sel + SEL_DADDR, p.dst);
    put_addr(&mut info, sel + SEL_SADDR, p.src);
    info[sel + SEL_DPORT..sel + SEL_DPORT + 2].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    put_u16(&mut info, sel + SEL_DPORT_MASK, 0xffff);
    put_u16(&mut info, sel + SEL_FAMILY, AF_INET);
    info[sel + SEL_PREFIXLEN_D] = 32;
    info[sel + SEL_PREFIXLEN_S] = 32;
    info[sel + SEL_PROTO] = IPPROTO_UDP;
    put_no_limits(&mut info, POL_LFT);
    info[POL_DIR] = XFRM_POLICY_OUT;
    info[POL_ACTION] = XFRM_POLICY_ALLOW;
    let mut tmpl = [0u8; USER_TMPL_LEN];
    put_addr(&mut tmpl, TMPL_ID + ID_DADDR, p.dst);
    tmpl[TMPL_ID + ID_PROTO] = IPPROTO_ESP;
    put_u16(&mut tmpl, TMPL_FAMILY, AF_INET);
    put_addr(&mut tmpl, TMPL_SADDR, p.src);
    put_u32(&mut tmpl, TMPL_REQID, REQID);
    tmpl[TMPL_MODE] = XFRM_MODE_TRANSPORT;
    put_u32(&mut tmpl, TMPL_AALGOS, u32::MAX);
    put_u32(&mut tmpl, TMPL_EALGOS, u32::MAX);
    put_u32(&mut tmpl, TMPL_CALGOS, u32::MAX);
    Msg::new(XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK, &info)
        .attr(XFRMA_TMPL, &tmpl)
        .attr(XFRMA_MARK, &mark_bytes(p.mark, u32::MAX))
}

/// XFRM_MSG_DELPOLICY by kernel index and direction, with the policy's mark (the kernel
/// matches value and mask exactly).
fn encode_del_policy(key: &PolicyKey) -> Msg {
    let mut body = [0u8; USERPOLICY_ID_LEN];
    put_u32(&mut body, POLID_INDEX, key.index);
    body[POLID_DIR] = key.dir;
    let msg = Msg::new(XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, &body);
    match key.mark {
        Some((v, m)) => msg.attr(XFRMA_MARK, &mark_bytes(v, m)),
        None => msg,
    }
}

// ---- decoding ----

struct NlMsg<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
fn messages(mut data: &[u8]) -> std::result::Result<Vec<NlMsg<'_>>, String> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = get_u32(data, 0)? as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(format!(
                "netlink message length {len} with {} bytes left",
                data.len()
            ));
        }
        out.push(NlMsg {
            ty: get_u16(data, 4)?,
            seq: get_u32(data, 8)?,
            payload: &data[NLMSG_HDRLEN..len],
        });
        let next = (len.div_ceil(4) * 4).min(data.len());
        data = &data[next..];
    }
    Ok(out)
}

/// The error field of an NLMSG_ERROR (or NLMSG_DONE) payload.
fn error_code(payload: &[u8]) -> Option<i32> {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
}

/// The attributes after a fixed header: (type, payload).
fn attrs(mut data: &[u8]) -> std::result::Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while data.len() >= NLA_HDRLEN {
        let len = get_u16(data, 0)? as usize;
        if len < NLA_HDRLEN || len > data.len() {
            return Err(format!(
                "attribute length {len} with {} bytes left",
                data.len()
            ));
        }
        out.push((get_u16(data, 2)? & NLA_TYPE_MASK, &data[NLA_HDRLEN..len]));
        let next = (len.div_ceil(4) * 4).min(data.len());
        data = &data[next..];
    }
    Ok(out)
}

fn get<const N: usize>(data: &[u8], off: usize) -> std::result::Result<[u8; N], String> {
    data.get(off..off + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} bytes, needed {} at offset {off}", data.len(), N))
}

fn get_u16(data: &[u8], off: usize) -> std::result::Result<u16, String> {
    get::<2>(data, off).map(u16::from_ne_bytes)
}

fn get_u32(data: &[u8], off: usize) -> std::result::Result<u32, String> {
    get::<4>(data, off).map(u32::from_ne_bytes)
}

fn get_be32(data: &[u8], off: usize) -> std::result::Result<u32, String> {
    get::<4>(data, off).map(u32::from_be_bytes)
}

fn get_addr(data: &[u8], off: usize) -> std::result::Result<Ipv4Addr, String> {
    get::<4>(data, off).map(Ipv4Addr::from)
}

fn get_mark(payload: &[u8]) -> std::result::Result<(u32, u32), String> {
    Ok((get_u32(payload, 0)?, get_u32(payload, 4)?))
}

/// A dumped SA, the fields we look at.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DumpedSa {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    spi: u32,
    proto: u8,
    family: u16,
    reqid: u32,
    mode: u8,
    /// The AEAD key, when the algorithm is ours with a 20-byte key and 128-bit ICV.
    key: Option<[u8; KEY_LEN]>,
    mark: Option<(u32, u32)>,
}

impl DumpedSa {
    fn ours(&self) -> Option<OurSa> {
        if self.reqid != REQID || self.family != AF_INET || self.proto != IPPROTO_ESP {
            return None;
        }
        let id = SaId {
            src: self.src,
            dst: self.dst,
            spi: self.spi,
            mark: self.mark,
        };
        let sa = match (self.key, self.mode, self.mark) {
            (Some(key), XFRM_MODE_TRANSPORT, None) => Some(EspSa {
                src: self.src,
                dst: self.dst,
                spi: self.spi,
                key,
            }),
            _ => None,
        };
        Some(OurSa { id, sa })
    }
}

fn decode_sa(payload: &[u8]) -> std::result::Result<DumpedSa, String> {
    if payload.len() < USERSA_INFO_LEN {
        return Err(format!("SA message of {} bytes", payload.len()));
    }
    let mut sa = DumpedSa {
        src: get_addr(payload, SA_SADDR)?,
        dst: get_addr(payload, SA_ID + ID_DADDR)?,
        spi: get_be32(payload, SA_ID + ID_SPI)?,
        proto: payload[SA_ID + ID_PROTO],
        family: get_u16(payload, SA_FAMILY)?,
        reqid: get_u32(payload, SA_REQID)?,
        mode: payload[SA_MODE],
        key: None,
        mark: None,
    };
    for (ty, a) in attrs(&payload[USERSA_INFO_LEN..])? {
        match ty {
            XFRMA_ALG_AEAD => sa.key = decode_aead(a)?,
            XFRMA_MARK => sa.mark = Some(get_mark(a)?),
            _ => {}
        }
    }
    Ok(sa)
}

/// The key of an xfrm_algo_aead if it is `rfc4106(gcm(aes))`, 160-bit key, 128-bit ICV.
fn decode_aead(a: &[u8]) -> std::result::Result<Option<[u8; KEY_LEN]>, String> {
    let name = get::<AEAD_NAME_LEN>(a, 0)?;
    let name_len = name.iter().position(|&c| c == 0).unwrap_or(AEAD_NAME_LEN);
    let key_bits = get_u32(a, AEAD_KEY_LEN)?;
    let icv_bits = get_u32(a, AEAD_ICV_LEN)?;
    if &name[..name_len] != AEAD_ALG.as_bytes()
        || key_bits != (KEY_LEN * 8) as u32
        || icv_bits != ICV_BITS
    {
        return Ok(None);
    }
    get::<KEY_LEN>(a, ALGO_AEAD_LEN).map(Some)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DumpedTmpl {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    family: u16,
    reqid: u32,
    mode: u8,
}

/// A dumped policy, the fields we look at.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DumpedPolicy {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    dport_mask: u16,
    sport: u16,
    sport_mask: u16,
    family: u16,
    prefixlen_d: u8,
    prefixlen_s: u8,
    proto: u8,
    index: u32,
    dir: u8,
    action: u8,
    mark: Option<(u32, u32)>,
    tmpls: Vec<DumpedTmpl>,
}

impl DumpedPolicy {
    fn ours(&self) -> Option<OurPolicy> {
        if !self.tmpls.iter().any(|t| t.reqid == REQID) {
            return None;
        }
        let key = PolicyKey {
            index: self.index,
            dir: self.dir,
            mark: self.mark,
            what: format!(
                "dir {} {}/{}→{}/{} proto {} dport {}",
                self.dir,
                self.src,
                self.prefixlen_s,
                self.dst,
                self.prefixlen_d,
                self.proto,
                self.dport
            ),
        };
        let shape_ok = self.dir == XFRM_POLICY_OUT
            && self.action == XFRM_POLICY_ALLOW
            && self.family == AF_INET
            && self.prefixlen_s == 32
            && self.prefixlen_d == 32
            && self.proto == IPPROTO_UDP
            && self.dport == VXLAN_PORT
            && self.dport_mask == 0xffff
            && self.sport_mask == 0
            && matches!(self.mark, Some((_, u32::MAX)))
            && self.tmpls
                == [DumpedTmpl {
                    src: self.src,
                    dst: self.dst,
                    proto: IPPROTO_ESP,
                    family: AF_INET,
                    reqid: REQID,
                    mode: XFRM_MODE_TRANSPORT,
                }];
        let policy = match self.mark {
            Some((mark, _)) if shape_ok => Some(VxlanPolicy {
                src: self.src,
                dst: self.dst,
                mark,
            }),
            _ => None,
        };
        Some(OurPolicy { key, policy })
    }
}

fn decode_policy(payload: &[u8]) -> std::result::Result<DumpedPolicy, String> {
    if payload.len() < USERPOLICY_INFO_LEN {
        return Err(format!("policy message of {} bytes", payload.len()));
    }
    let sel = POL_SEL;
    let mut p = DumpedPolicy {
        src: get_addr(payload, sel + SEL_SADDR)?,
        dst: get_addr(payload, sel + SEL_DADDR)?,
        dport: u16::from_be_bytes(get::<2>(payload, sel + SEL_DPORT)?),
        dport_mask: get_u16(payload, sel + SEL_DPORT_MASK)?,
        sport: u16::from_be_bytes(get::<2>(payload, sel + SEL_SPORT)?),
        sport_mask: get_u16(payload, sel + SEL_SPORT_MASK)?,
        family: get_u16(payload, sel + SEL_FAMILY)?,
        prefixlen_d: payload[sel + SEL_PREFIXLEN_D],
        prefixlen_s: payload[sel + SEL_PREFIXLEN_S],
        proto: payload[sel + SEL_PROTO],
        index: get_u32(payload, POL_INDEX)?,
        dir: payload[POL_DIR],
        action: payload[POL_ACTION],
        mark: None,
        tmpls: Vec::new(),
    };
    for (ty, a) in attrs(&payload[USERPOLICY_INFO_LEN..])? {
        match ty {
            XFRMA_MARK => p.mark = Some(get_mark(a)?),
            XFRMA_TMPL => {
                if a.len() % USER_TMPL_LEN != 0 {
                    return Err(format!("XFRMA_TMPL of {} bytes", a.len()));
                }
                for t in a.chunks_exact(USER_TMPL_LEN) {
                    p.tmpls.push(DumpedTmpl {
                        src: get_addr(t, TMPL_SADDR)?,
                        dst: get_addr(t, TMPL_ID + ID_DADDR)?,
                        proto: t[TMPL_ID + ID_PROTO],
                        family: get_u16(t, TMPL_FAMILY)?,
                        reqid: get_u32(t, TMPL_REQID)?,
                        mode: t[TMPL_MODE],
                    });
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(lines: &[&str]) -> Vec<u8> {
        let s: String = lines.concat();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn key(first: u8) -> [u8; KEY_LEN] {
        std::array::from_fn(|i| first.wrapping_add(i as u8))
    }

    fn header(msg: &[u8]) -> (u32, u16, u16, u32, u32) {
        (
            get_u32(msg, 0).unwrap(),
            get_u16(msg, 4).unwrap(),
            get_u16(msg, 6).unwrap(),
            get_u32(msg, 8).unwrap(),
            get_u32(msg, 12).unwrap(),
        )
    }

    /// Payload of the NEWSA that `ip xfrm state add src 10.0.0.1 dst 10.0.0.2 proto esp spi
    /// 0x00001000 reqid 0x726d0001 mode transport replay-window 32 aead 'rfc4106(gcm(aes))'
    /// 0x000102030405060708090a0b0c0d0e0f10111213 128` sends (iproute2 6.1, captured with
    /// `strace -e trace=sendmsg -xx`; header: len 336, type 0x10, flags REQUEST|ACK).
    const IP_NEWSA: &[&str] = &[
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000a00000200000000000000000000000000001000320000000a000001000000000000000000000000",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000001006d7202000020000000000000000060001200726663343130362867636d28",
        "616573292900000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000a000000080000000000102030405060708090a0b0c0d0e0f10111213",
    ];

    /// Payload of the UPDPOLICY that `ip xfrm policy update src 10.0.0.1/32 dst 10.0.0.2/32
    /// proto udp dport 4789 dir out mark 0x00e1 mask 0xffffffff tmpl src 10.0.0.1 dst 10.0.0.2
    /// proto esp reqid 0x726d0001 mode transport` sends (header: len 264, type 0x19,
    /// flags REQUEST|ACK).
    const IP_UPDPOLICY: &[&str] = &[
        "0a0000020000000000000000000000000a00000100000000000000000000000012b5ffff000000000200202011000000",
        "0000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000100000000000000440005000a00000200000000000000000000000000000000",
        "32000000020000000a00000100000000000000000000000001006d7200000000ffffffffffffffffffffffff0c001500",
        "e1000000ffffffff",
    ];

    /// Payload of the NEWPOLICY (NLM_F_MULTI) the kernel (6.18) sent for `ip xfrm policy` after
    /// the update above: same policy with index 1, its add time, XFRMA_POLICY_TYPE.
    const KERNEL_POLICY_DUMP: &[&str] = &[
        "0a0000020000000000000000000000000a00000100000000000000000000000012b5ffff000000000200202011000000",
        "0000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000008f76116b00000000",
        "000000000000000000000000010000000100000000000000440005000a00000200000000000000000000000000000000",
        "32000000020000000a00000100000000000000000000000001006d7200000000ffffffffffffffffffffffff0a001000",
        "00000000000000000c001500e1000000ffffffff",
    ];

    fn sample_sa() -> EspSa {
        EspSa {
            src: a("10.0.0.1"),
            dst: a("10.0.0.2"),
            spi: 0x1000,
            key: key(0),
        }
    }

    fn sample_policy() -> VxlanPolicy {
        VxlanPolicy {
            src: a("10.0.0.1"),
            dst: a("10.0.0.2"),
            mark: 0xe1,
        }
    }

    #[test]
    fn new_sa_is_byte_for_byte_what_iproute2_sends() {
        let msg = encode_new_sa(&sample_sa()).finish(7);
        assert_eq!(
            header(&msg),
            (336, XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK, 7, 0)
        );
        assert_eq!(msg[NLMSG_HDRLEN..], hex(IP_NEWSA)[..]);
    }

    #[test]
    fn upd_policy_is_byte_for_byte_what_iproute2_sends() {
        let msg = encode_upd_policy(&sample_policy()).finish(9);
        assert_eq!(
            header(&msg),
            (264, XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK, 9, 0)
        );
        assert_eq!(msg[NLMSG_HDRLEN..], hex(IP_UPDPOLICY)[..]);
    }

    #[test]
    fn kernel_policy_dump_decodes_to_ours() {
        let p = decode_policy(&hex(KERNEL_POLICY_DUMP)).unwrap();
        assert_eq!(p.index, 1);
        assert_eq!(p.dir, XFRM_POLICY_OUT);
        assert_eq!(p.mark, Some((0xe1, u32::MAX)));
        let ours = p.ours().unwrap();
        assert_eq!(ours.policy, Some(sample_policy()));
        assert_eq!(ours.key.index, 1);
        // Another reqid is not ours.
        let mut other = p.clone();
        other.tmpls[0].reqid = 7;
        assert_eq!(other.ours(), None);
        // Ours but another shape (no mark): deleted by sync, not read.
        let mut odd = p;
        odd.mark = None;
        assert_eq!(odd.ours().unwrap().policy, None);
    }

    #[test]
    fn sa_message_decodes_with_its_key() {
        let sa = decode_sa(&hex(IP_NEWSA)).unwrap();
        let ours = sa.ours().unwrap();
        assert_eq!(ours.sa, Some(sample_sa()));
        assert_eq!(ours.id, SaId::of(&sample_sa()));
        let mut other_alg = hex(IP_NEWSA);
        other_alg[USERSA_INFO_LEN + NLA_HDRLEN] = b'R';
        let odd = decode_sa(&other_alg).unwrap().ours().unwrap();
        assert_eq!(odd.sa, None, "another algorithm is not an EspSa of ours");
        assert!(decode_sa(&hex(IP_NEWSA)[..100]).is_err());
    }

    #[test]
    fn del_messages_carry_ids_and_marks() {
        let msg = encode_del_sa(&SaId::of(&sample_sa())).finish(1);
        let m = &messages(&msg).unwrap()[0];
        assert_eq!(m.ty, XFRM_MSG_DELSA);
        assert_eq!(get_addr(m.payload, SAID_DADDR).unwrap(), a("10.0.0.2"));
        assert_eq!(get_be32(m.payload, SAID_SPI).unwrap(), 0x1000);
        assert_eq!(get_u16(m.payload, SAID_FAMILY).unwrap(), AF_INET);
        assert_eq!(m.payload[SAID_PROTO], IPPROTO_ESP);
        let at = attrs(&m.payload[USERSA_ID_LEN..]).unwrap();
        assert_eq!(at.len(), 1);
        assert_eq!(at[0].0, XFRMA_SRCADDR);
        assert_eq!(get_addr(at[0].1, 0).unwrap(), a("10.0.0.1"));

        let key = PolicyKey {
            index: 0x6b11_768f,
            dir: XFRM_POLICY_OUT,
            mark: Some((0xe1, u32::MAX)),
            what: String::new(),
        };
        let msg = encode_del_policy(&key).finish(2);
        let m = &messages(&msg).unwrap()[0];
        assert_eq!(m.ty, XFRM_MSG_DELPOLICY);
        assert_eq!(get_u32(m.payload, POLID_INDEX).unwrap(), 0x6b11_768f);
        assert_eq!(m.payload[POLID_DIR], XFRM_POLICY_OUT);
        let at = attrs(&m.payload[USERPOLICY_ID_LEN..]).unwrap();
        assert_eq!(at, vec![(XFRMA_MARK, &mark_bytes(0xe1, u32::MAX)[..])]);
    }

    #[test]
    fn messages_split_and_reject_bad_lengths() {
        let mut two = Msg::new(NLMSG_ERROR, 0, &(-17i32).to_ne_bytes()).finish(3);
        two.extend(Msg::new(NLMSG_DONE, 0, &0i32.to_ne_bytes()).finish(4));
        let ms = messages(&two).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(
            (ms[0].ty, ms[0].seq, error_code(ms[0].payload)),
            (NLMSG_ERROR, 3, Some(-17))
        );
        assert_eq!((ms[1].ty, ms[1].seq), (NLMSG_DONE, 4));
        let mut bad = two.clone();
        put_u32(&mut bad, 0, 4000);
        assert!(messages(&bad).is_err());
    }

    fn have(sa: &EspSa) -> OurSa {
        OurSa {
            id: SaId::of(sa),
            sa: Some(sa.clone()),
        }
    }

    fn have_policy(p: &VxlanPolicy, index: u32) -> OurPolicy {
        OurPolicy {
            key: PolicyKey {
                index,
                dir: XFRM_POLICY_OUT,
                mark: Some((p.mark, u32::MAX)),
                what: String::new(),
            },
            policy: Some(p.clone()),
        }
    }

    #[test]
    fn plan_adds_the_new_sa_before_deleting_the_old_one() {
        let old = sample_sa();
        let new = EspSa {
            spi: 0x2000,
            key: key(100),
            ..old.clone()
        };
        let want = IpsecSpec {
            sas: vec![new.clone()],
            policies: vec![],
        };
        assert_eq!(
            plan(&[have(&old)], &[], &want),
            vec![Step::AddSa(new), Step::DelSa(SaId::of(&old))]
        );
    }

    #[test]
    fn plan_replaces_an_sa_whose_key_changed_and_keeps_equal_ones() {
        let old = sample_sa();
        let rekeyed = EspSa {
            key: key(50),
            ..old.clone()
        };
        let other = EspSa {
            dst: a("10.0.0.3"),
            ..old.clone()
        };
        let want = IpsecSpec {
            sas: vec![rekeyed.clone(), other.clone()],
            policies: vec![],
        };
        assert_eq!(
            plan(&[have(&old), have(&other)], &[], &want),
            vec![Step::DelSa(SaId::of(&old)), Step::AddSa(rekeyed)]
        );
    }

    #[test]
    fn plan_puts_policies_then_deletes_unwanted_policies_then_sas() {
        let keep = sample_policy();
        let gone = VxlanPolicy {
            dst: a("10.0.0.9"),
            ..keep.clone()
        };
        let added = VxlanPolicy {
            mark: 0xe2,
            ..keep.clone()
        };
        let odd = OurPolicy {
            key: PolicyKey {
                index: 77,
                dir: 0,
                mark: None,
                what: String::new(),
            },
            policy: None,
        };
        let sa = sample_sa();
        let want = IpsecSpec {
            sas: vec![],
            policies: vec![keep.clone(), added.clone()],
        };
        let have_policies = [have_policy(&keep, 1), have_policy(&gone, 2), odd.clone()];
        assert_eq!(
            plan(&[have(&sa)], &have_policies, &want),
            vec![
                Step::PutPolicy(added),
                Step::DelPolicy(have_policies[1].key.clone()),
                Step::DelPolicy(odd.key),
                Step::DelSa(SaId::of(&sa)),
            ]
        );
        let same = IpsecSpec {
            sas: vec![sa.clone()],
            policies: vec![keep.clone()],
        };
        assert_eq!(plan(&[have(&sa)], &[have_policy(&keep, 1)], &same), vec![]);
    }

    #[test]
    fn spec_with_one_sa_id_and_two_keys_is_refused() {
        let sa = sample_sa();
        let twin = EspSa {
            key: key(9),
            ..sa.clone()
        };
        let spec = IpsecSpec {
            sas: vec![sa, twin],
            policies: vec![],
        };
        let e = validate(&spec).unwrap_err();
        assert!(
            e.to_string()
                .contains("ESP SA 10.0.0.1→10.0.0.2 spi 0x00001000"),
            "{e}"
        );
    }

    #[test]
    fn xfrm_error_names_op_object_and_reason() {
        let e = Error::Xfrm {
            op: "adding".into(),
            object: format!("{} in netns /run/netns/x", SaId::of(&sample_sa())),
            errno: Errno::EPROTONOSUPPORT,
        };
        assert_eq!(
            e.to_string(),
            "adding ESP SA 10.0.0.1→10.0.0.2 spi 0x00001000 in netns /run/netns/x: xfrm: Protocol not supported"
        );
        assert_eq!(e.errno(), Some(Errno::EPROTONOSUPPORT));
    }
}
