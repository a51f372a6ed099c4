//! The one error type of this crate: every variant says what was being done and to which object.

use std::path::PathBuf;

use nix::errno::Errno;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed; `object` names the link/entry and the namespace.
    #[error("{op} {object}: netlink: {}", netlink_reason(source))]
    Netlink {
        op: String,
        object: String,
        source: rtnetlink::Error,
    },
    /// A system call or file operation on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kernel refused an XFRM (IPsec) netlink request, or the XFRM socket failed;
    /// `object` names the SA or policy and the namespace.
    #[error("{op} {object}: xfrm: {}", errno.desc())]
    Xfrm {
        op: String,
        object: String,
        errno: Errno,
    },
    /// The kernel answered an XFRM request with something this crate cannot parse.
    #[error("{op} {object}: xfrm: malformed reply: {detail}")]
    XfrmReply {
        op: String,
        object: String,
        detail: String,
    },
    /// nft refused a transaction, could not be run, or the table could not be written.
    #[error("{op}: nft: {source}")]
    Nft {
        op: String,
        #[source]
        source: routemesh_nft::NftError,
    },
    /// The kernel holds something under our name that we did not make and will not touch.
    #[error("{object}: {detail}")]
    Conflict { object: String, detail: String },
    /// A spec value this crate cannot apply (the planner should have refused it).
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    /// A helper thread that entered a namespace panicked.
    #[error("{op}: helper thread panicked")]
    ThreadPanicked { op: String },
    /// A teardown collected several errors instead of stopping at the first.
    #[error("{}", join(.0))]
    Many(Vec<Error>),
}

impl Error {
    pub fn netlink(
        op: impl Into<String>,
        object: impl Into<String>,
        source: rtnetlink::Error,
    ) -> Self {
        Error::Netlink {
            op: op.into(),
            object: object.into(),
            source,
        }
    }

    pub fn io(op: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            path: path.into(),
            source,
        }
    }

    pub fn sys(op: impl Into<String>, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Error::io(op, path, std::io::Error::from(errno))
    }

    /// The errno behind this error, if it is a single kernel refusal.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Netlink { source, .. } => netlink_errno(source),
            Error::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::Xfrm { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Folds collected teardown errors: none is Ok, one is itself, more are `Many`.
    pub fn collect(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }
}

/// The errno of a netlink NACK (`None` for other rtnetlink failures).
pub fn netlink_errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

fn netlink_reason(e: &rtnetlink::Error) -> String {
    match netlink_errno(e) {
        Some(errno) => errno.desc().to_string(),
        None => e.to_string(),
    }
}

fn join(errors: &[Error]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} errors: {}", errors.len(), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn eexist() -> rtnetlink::Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-libc::EEXIST);
        rtnetlink::Error::NetlinkError(msg)
    }

    #[test]
    fn netlink_error_names_op_object_and_reason() {
        let e = Error::netlink(
            "adding",
            "fdb entry 02:42:0a:00:00:05 on vxlan4096 in /run/routemesh/netns/ov-app",
            eexist(),
        );
        assert_eq!(
            e.to_string(),
            "adding fdb entry 02:42:0a:00:00:05 on vxlan4096 in /run/routemesh/netns/ov-app: netlink: File exists"
        );
        assert_eq!(e.errno(), Some(Errno::EEXIST));
    }

    #[test]
    fn many_joins_every_error() {
        let e = Error::Many(vec![
            Error::Nft {
                op: "apply".into(),
                source: routemesh_nft::NftError::Injected("boom".into()),
            },
            Error::sys("umount", "/x", Errno::EBUSY),
        ]);
        assert_eq!(
            e.to_string(),
            "2 errors: apply: nft: boom; umount /x: Device or resource busy (os error 16)"
        );
        assert!(Error::collect(vec![]).is_ok());
    }
}
