//! One NETLINK_NETFILTER socket bound to one network namespace, sending element batches and
//! reading their answers.
//!
//! The kernel handles a batch inside `sendmsg`: by the time it returns, every answer is
//! queued on the socket. So the reader takes what is queued without waiting (as nft does)
//! and never needs a timeout.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::errno::Errno;

use super::encode::{self, Batch, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_HDRLEN};
use super::{NetlinkError, Refusal};

/// Receive buffer: room for the answers of the biggest batch we send.
const RCVBUF: libc::c_int = 4 << 20;
/// `NLM_F_DUMP_INTR`: the dump saw the objects change while it ran.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// Longest wait for one datagram of a dump.
const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Read size: one datagram of answers.
const READ_CHUNK: usize = 64 << 10;

/// Identity of a network namespace: the nsfs device and inode of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    pub(crate) fn of(path: &Path) -> std::io::Result<NsId> {
        let meta = std::fs::metadata(path)?;
        Ok(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The calling thread's own namespace file.
pub(crate) const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

pub(crate) struct NfSocket {
    socket: Socket,
    /// The namespace the socket was opened in.
    pub(crate) ns: NsId,
    seq: u32,
    sndbuf: usize,
}

impl std::fmt::Debug for NfSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfSocket")
            .field("ns", &self.ns)
            .field("seq", &self.seq)
            .finish()
    }
}

/// Why a batch was not applied, or may not have been.
#[derive(Debug)]
pub(crate) enum SendError {
    /// `sendmsg` failed: the kernel saw nothing of the batch.
    NotSent(std::io::Error),
    /// The batch reached the kernel; this is what went wrong afterwards.
    After(NetlinkError),
}

impl NfSocket {
    /// Opens a socket in the namespace at `netns` (entered on a short-lived thread), or in
    /// the calling thread's namespace.
    pub(crate) fn open(netns: Option<&Path>) -> std::io::Result<NfSocket> {
        let Some(path) = netns else {
            return Self::open_here(NsId::of(Path::new(THREAD_NETNS))?);
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(path)?;
                    let meta = file.metadata()?;
                    let ns = NsId {
                        dev: meta.dev(),
                        ino: meta.ino(),
                    };
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    Self::open_here(ns)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(std::io::Error::other(
                        "the thread opening the socket panicked",
                    ))
                })
        })
    }

    fn open_here(ns: NsId) -> std::io::Result<NfSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors carry only the header of the refused message, plus the offset of the bad
        // attribute (which element) and the kernel's message.
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        // Best effort: without it the default buffer holds the answers of typical batches.
        let _ = set_sock_opt(&socket, libc::SO_RCVBUFFORCE, RCVBUF)
            .or_else(|_| set_sock_opt(&socket, libc::SO_RCVBUF, RCVBUF));
        // Dumps are read blocking; a kernel that stopped answering must not hang the caller.
        set_rcv_timeout(&socket, DUMP_TIMEOUT)?;
        let sndbuf = sock_opt(&socket, libc::SO_SNDBUF).unwrap_or(0);
        // A random start keeps two sockets of one process apart in `nlmon` captures.
        let seq = std::process::id().wrapping_mul(2_654_435_761);
        Ok(NfSocket {
            socket,
            ns,
            seq,
            sndbuf,
        })
    }

    /// Sends one batch and checks every answer. `netns` names the namespace in errors.
    pub(crate) fn send(&mut self, batch: &mut Batch, netns: &str) -> Result<(), SendError> {
        batch.renumber(self.seq);
        self.seq = self.seq.wrapping_add(batch.seq_count());
        self.fit(batch.bytes.len())
            .map_err(|e| SendError::After(too_large(netns, batch.bytes.len(), e)))?;
        // Answers of an earlier batch cut short would be read as this one's.
        self.drain();
        match self.socket.send(&batch.bytes, 0) {
            Ok(n) if n == batch.bytes.len() => {}
            Ok(n) => {
                return Err(SendError::After(NetlinkError::Protocol {
                    netns: netns.to_string(),
                    detail: format!("sent {n} of {} bytes", batch.bytes.len()),
                }))
            }
            Err(e) => return Err(SendError::NotSent(e)),
        }
        self.answers(batch, netns).map_err(SendError::After)
    }

    /// Every rule of `table` in the kernel, in chain order: (chain, expressions).
    pub(crate) fn dump_rules(
        &mut self,
        table: &str,
        netns: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, NetlinkError> {
        let mut rules = Vec::new();
        let seq = self.next_seq();
        self.dump(
            &encode::rule_dump_request(table, seq),
            seq,
            netns,
            &format!("the rules of table ip {table}"),
            |m| rules.extend(encode::dumped_rule(m)),
        )?;
        Ok(rules)
    }

    /// The listing of set (or map) `set` of `table` in the kernel: the payloads of its
    /// messages, read with [`encode::listed_elements`].
    pub(crate) fn dump_elements(
        &mut self,
        table: &str,
        set: &str,
        netns: &str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut payloads = Vec::new();
        let seq = self.next_seq();
        self.dump(
            &encode::setelem_dump_request(table, set, seq),
            seq,
            netns,
            &format!("the elements of set ip {table} {set}"),
            |m| payloads.extend(encode::setelem_payload(m).map(<[u8]>::to_vec)),
        )?;
        Ok(payloads)
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Sends a dump request and hands every answer to `each` until the dump's end. A dump
    /// the kernel marks interrupted (the objects changed while it was read) is an error.
    fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        netns: &str,
        what: &str,
        mut each: impl FnMut(&encode::Msg<'_>),
    ) -> Result<(), NetlinkError> {
        let io = |op: &str, source: std::io::Error| NetlinkError::Io {
            netns: netns.to_string(),
            op: format!("{op} {what}"),
            source,
        };
        self.drain();
        self.socket
            .send(request, 0)
            .map_err(|e| io("asking for", e))?;
        let mut buf = vec![0u8; READ_CHUNK];
        // A dump is produced as it is read: block until its end.
        loop {
            let n = match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(0) => {
                    return Err(NetlinkError::Protocol {
                        netns: netns.to_string(),
                        detail: format!("the dump of {what} ended early"),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("reading", e)),
            };
            for m in encode::messages(&buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(NetlinkError::Protocol {
                        netns: netns.to_string(),
                        detail: format!("the dump of {what} was interrupted by a change"),
                    });
                }
                match m.kind {
                    encode::NLMSG_DONE => return Ok(()),
                    encode::NLMSG_ERROR => {
                        let errno = m
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io("dumping", std::io::Error::from_raw_os_error(-errno)));
                        }
                        return Ok(());
                    }
                    _ => each(&m),
                }
            }
        }
    }

    /// Grows the send buffer when a batch would not fit (root may exceed the sysctl cap).
    fn fit(&mut self, len: usize) -> std::io::Result<()> {
        // netlink refuses a message longer than the send buffer less 32 bytes.
        if len + 64 <= self.sndbuf {
            return Ok(());
        }
        let want = (len + 64).next_power_of_two();
        let value = libc::c_int::try_from(want).map_err(std::io::Error::other)?;
        set_sock_opt(&self.socket, libc::SO_SNDBUFFORCE, value)
            .or_else(|_| set_sock_opt(&self.socket, libc::SO_SNDBUF, value))?;
        self.sndbuf = sock_opt(&self.socket, libc::SO_SNDBUF)?;
        if len + 64 <= self.sndbuf {
            Ok(())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory))
        }
    }

    /// Reads what is queued without waiting, dropping it.
    fn drain(&self) {
        let mut buf = vec![0u8; READ_CHUNK];
        while let Ok(n) = self.socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
        }
    }

    /// Every element message must be answered; any error refuses the whole batch (the kernel
    /// aborts it), and the first one is reported.
    fn answers(&self, batch: &Batch, netns: &str) -> Result<(), NetlinkError> {
        let mut acked = vec![false; batch.messages.len()];
        let mut first_error: Option<NetlinkError> = None;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match self.socket.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Io {
                        netns: netns.to_string(),
                        op: "reading the kernel's answers".to_string(),
                        source,
                    })
                }
            };
            for m in encode::messages(&buf[..n]) {
                if m.kind == encode::NLMSG_DONE {
                    continue;
                }
                if m.kind != encode::NLMSG_ERROR {
                    continue;
                }
                let errno = m
                    .payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if let Some(i) = batch.messages.iter().position(|msg| msg.seq == m.seq) {
                    acked[i] = true;
                }
                if errno == 0 || first_error.is_some() {
                    continue;
                }
                first_error = Some(refusal(batch, netns, m.seq, -errno, m.flags, m.payload));
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(i) = acked.iter().position(|a| !a) {
            let m = &batch.messages[i];
            return Err(NetlinkError::Protocol {
                netns: netns.to_string(),
                detail: format!(
                    "no answer to {} set ip {} {} (seq {})",
                    m.op, m.table, m.set, m.seq
                ),
            });
        }
        Ok(())
    }
}

fn too_large(netns: &str, bytes: usize, source: std::io::Error) -> NetlinkError {
    NetlinkError::TooLarge {
        netns: netns.to_string(),
        bytes,
        source,
    }
}

/// The typed error for one `NLMSG_ERROR` answer.
fn refusal(
    batch: &Batch,
    netns: &str,
    seq: u32,
    errno: i32,
    flags: u16,
    payload: &[u8],
) -> NetlinkError {
    let errno = Errno::from_raw(errno);
    // After the error code: the refused message's header, its payload unless capped, then
    // the extended-ack attributes.
    let orig_len = payload
        .get(4..8)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(NLMSG_HDRLEN);
    let tlv_start = if flags & encode::NLM_F_CAPPED != 0 {
        4 + NLMSG_HDRLEN
    } else {
        4 + orig_len.next_multiple_of(4)
    };
    let (mut message, mut offset) = (None, None);
    if flags & encode::NLM_F_ACK_TLVS != 0 {
        for (kind, value) in encode::attrs(payload.get(tlv_start..).unwrap_or(&[])) {
            match kind {
                NLMSGERR_ATTR_MSG => {
                    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                    message = Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
                NLMSGERR_ATTR_OFFS if value.len() >= 4 => {
                    offset = Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]));
                }
                _ => {}
            }
        }
    }
    match batch.message(seq) {
        Some(m) => NetlinkError::Refused(Box::new(super::Refused {
            netns: netns.to_string(),
            table: m.table.clone(),
            set: m.set.clone(),
            op: m.op,
            element: offset.and_then(|o| m.element_at(o as usize).map(str::to_string)),
            reason: Refusal::of(errno, m.op),
            errno,
            message,
        })),
        // An error on the batch's begin message: the kernel could not take or commit it.
        None => NetlinkError::BatchRefused {
            netns: netns.to_string(),
            errno,
            message,
        },
    }
}

fn sock_opt(socket: &Socket, name: libc::c_int) -> std::io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for the kernel to write an int into.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

fn set_rcv_timeout(socket: &Socket, timeout: std::time::Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(5),
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_sock_opt(socket: &Socket, name: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `value` is a valid int and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
