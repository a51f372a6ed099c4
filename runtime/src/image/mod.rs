//! The node's local OCI image store: images loaded from OCI archives or layout directories
//! (as `skopeo copy ... oci-archive:FILE:NAME:TAG`, `podman save --format oci-archive` or
//! `umoci` make them), unpacked once into layer directories that every task mounts as
//! overlayfs lowerdirs.
//!
//! # Store layout
//!
//! ```text
//! <root>/index.json           names -> {id, layer diff ids (bottom first), ImageConfig, size,
//!                             created}, plus every layer's unpacked size; replaced atomically
//!                             (written to a temp file, then renamed)
//! <root>/layers/<diffid-hex>/ one unpacked layer tree, shared read-only by every image and task;
//!                             OCI whiteouts converted to overlayfs ones (`.wh.NAME` -> a 0:0
//!                             character device NAME, `.wh..wh..opq` -> the xattr
//!                             `trusted.overlay.opaque=y` on its directory)
//! <root>/configs/<id-hex>.json the image config blob as loaded (its sha256 is the image id)
//! <root>/tmp/                 staging for loads and trash for removals; whatever is left here
//!                             by a crash is deleted by the next load
//! <root>/lock                 flock(2) held by `load` and `remove` while they change the store
//! ```
//!
//! A load reads and verifies everything (blob sizes and sha256 digests, each layer's diff id
//! against the config's `rootfs.diff_ids`) and unpacks new layers under `tmp/`; only when all
//! of it succeeded are the layers renamed into `layers/` and the index replaced, so a failed
//! load leaves the store as it was. Layers already present are not unpacked again. `list` and
//! `get` read the index without the lock (it is only ever replaced whole).
//!
//! [`resolve_user`] turns an image's (or a task's) `user` spec into ids, reading /etc/passwd
//! and /etc/group from the image's layers.

mod error;
mod load;
mod reference;
mod store;
mod unpack;
mod user;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::{ImageError, LoadProblem};
pub use reference::normalize_reference;
pub use store::ImageStore;
pub use user::{resolve_user, ResolvedUser};

/// An image as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The normalised name (`web:latest`).
    pub name: String,
    /// The config blob's digest, `sha256:...`.
    pub id: String,
    /// Bytes of file content in its unpacked layers.
    pub size: u64,
    /// The config's `created` timestamp (RFC 3339), when it has one.
    pub created: Option<String>,
}

/// An image ready to run: its layers and the runtime defaults of its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    /// The config blob's digest, `sha256:...`.
    pub id: String,
    /// The unpacked layer directories, bottom first (overlayfs wants them top first).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// The parts of an OCI image config a task runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` strings, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`, ... sorted.
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    fn from_oci(config: &oci_spec::image::ImageConfiguration) -> ImageConfig {
        let Some(c) = config.config() else {
            return ImageConfig::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        exposed_ports.dedup();
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
            exposed_ports,
        }
    }
}
