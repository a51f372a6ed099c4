//! What can go wrong applying nftables: every variant names the namespace or the table.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The model cannot be written as asked: a name nft would misread, a priority its hook
    /// refuses. Nothing was sent.
    #[error("nft table ip {table}: {detail}")]
    Invalid { table: String, detail: String },
    /// Opening the namespace, starting nft or talking to it failed.
    #[error("nft in {netns}: {op}: {source}")]
    Io {
        netns: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// nft refused the transaction: none of it was applied.
    #[error("nft in {netns} refused the transaction on table {tables}: {message}")]
    Rejected {
        netns: String,
        tables: String,
        message: String,
    },
    /// Sending elements over netlink failed ([`crate::NftNetlink`]).
    #[error(transparent)]
    Netlink(Box<crate::netlink::NetlinkError>),
    /// A failure a test queued on [`crate::FakeNft`].
    #[error("{0}")]
    Injected(String),
}

impl NftError {
    /// Whether nft ran and said no (as opposed to not running at all).
    pub fn is_rejection(&self) -> bool {
        match self {
            NftError::Rejected { .. } | NftError::Injected(_) => true,
            NftError::Netlink(e) => e.is_rejection(),
            NftError::Invalid { .. } | NftError::Io { .. } => false,
        }
    }
}

impl From<crate::netlink::NetlinkError> for NftError {
    fn from(e: crate::netlink::NetlinkError) -> Self {
        NftError::Netlink(Box::new(e))
    }
}

impl NftError {
    /// The netlink executor's error, when that is what this is.
    pub fn netlink(&self) -> Option<&crate::netlink::NetlinkError> {
        match self {
            NftError::Netlink(e) => Some(e),
            _ => None,
        }
    }
}

/// How errors name a namespace: its path, or the caller's own.
pub(crate) fn netns_label(netns: Option<&Path>) -> String {
    netns.map_or_else(
        || "the current namespace".to_string(),
        |p| p.display().to_string(),
    )
}
