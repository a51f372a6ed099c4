//! What can go wrong in the image store, each naming the image or file and the operation.

use std::io;
use std::path::PathBuf;

/// An image store error.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file operation on the store failed (`op` says which: "creating", "reading", ...).
    #[error("image store: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Loading an archive or layout failed; nothing was changed in the store.
    #[error("loading {}: {problem}", from.display())]
    Load { from: PathBuf, problem: LoadProblem },
    /// The store's own index could not be read or parsed.
    #[error("image store index {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// An image name that is not a valid reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    /// No image by that name or id.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// An id prefix (or an id with several names, for `remove`) that matches more than one.
    #[error("image reference {reference:?} is ambiguous: it matches {matches}")]
    Ambiguous { reference: String, matches: String },
    /// `remove` refused: the caller says a task uses the image.
    #[error("image {name} ({id}) is in use by {by}")]
    InUse {
        name: String,
        id: String,
        by: String,
    },
    /// A user spec names a user that the root filesystem's /etc/passwd lacks.
    #[error("unknown user {user:?} in user spec {spec:?} (not in /etc/passwd)")]
    UnknownUser { spec: String, user: String },
    /// A user spec names a group that the root filesystem's /etc/group lacks.
    #[error("unknown group {group:?} in user spec {spec:?} (not in /etc/group)")]
    UnknownGroup { spec: String, group: String },
    /// A user spec that is not `user`, `user:group` (names or ids).
    #[error("invalid user spec {spec:?}: {reason}")]
    InvalidUser { spec: String, reason: &'static str },
}

/// Why a load failed (inside [`ImageError::Load`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadProblem {
    #[error("not an OCI archive or layout: {0}")]
    NotOci(String),
    #[error("the archive is truncated or corrupt: {0}")]
    BadArchive(String),
    #[error("archive entry {entry:?} is not allowed: {reason}")]
    BadArchiveEntry { entry: String, reason: &'static str },
    #[error("blob {digest} is missing")]
    BlobMissing { digest: String },
    #[error("blob {digest} is truncated ({actual} of {expected} bytes)")]
    BlobTruncated {
        digest: String,
        actual: u64,
        expected: u64,
    },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    BlobSize {
        digest: String,
        actual: u64,
        expected: u64,
    },
    #[error("blob {digest} does not match its digest (its content hashes to sha256:{actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error("unsupported digest {digest}: only sha256 is supported")]
    UnsupportedDigest { digest: String },
    #[error("layer {digest}: uncompressed content hashes to sha256:{actual}, the config's diff id is {expected}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("manifest {manifest} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount {
        manifest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {digest} has media type {media_type}: {reason}")]
    UnsupportedLayer {
        digest: String,
        media_type: String,
        reason: &'static str,
    },
    #[error("{what} {digest} is not valid: {reason}")]
    Malformed {
        what: &'static str,
        digest: String,
        reason: String,
    },
    #[error("layer {digest}: entry {entry:?} is not allowed: {reason}")]
    UnsafeEntry {
        digest: String,
        entry: String,
        reason: &'static str,
    },
    #[error("layer {digest}: unpacking {entry:?}: {source}")]
    Unpack {
        digest: String,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("an image in it has no name (no org.opencontainers.image.ref.name annotation naming it); give a tag")]
    NoName,
    #[error("blob {digest} is truncated (the archive ends inside it)")]
    ArchiveBlobTruncated { digest: String },
    #[error("{count} images in it, but a tag can name only one")]
    TagNeedsOne { count: usize },
    #[error("no images in it")]
    Empty,
    #[error("image index {digest} has no manifest for {platform}")]
    NoPlatform { digest: String, platform: String },
    #[error("{names} is given to more than one image")]
    NameTwice { names: String },
    #[error("image name {name:?} from the ref.name annotation: {reason}")]
    BadName { name: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl LoadProblem {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LoadProblem::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
