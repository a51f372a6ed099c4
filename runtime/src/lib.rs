//! Tasks as OCI containers: the bundle a task runs from (`bundle`), its root file system
//! (`rootfs`), the runtime that runs it (`oci`: `runc` or `crun`, through their documented
//! CLI), what its cgroup says after it ended (`cgroup`), and the node's store of local OCI
//! images (`image`). Docker's defaults (`defaults`, `seccomp`) are data.

pub mod bundle;
pub mod cgroup;
pub mod container;
pub mod defaults;
pub mod error;
pub mod image;
pub mod oci;
pub mod rootfs;
pub mod seccomp;

pub use error::RuntimeError;
pub use oci_spec;
