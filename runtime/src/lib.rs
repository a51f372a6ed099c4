//! Tasks as OCI containers: the bundle a task runs from, the runtime that runs it (`runc` or
//! `crun`, through their documented CLI), and the node's store of local OCI images.

pub mod defaults;
pub mod image;
pub mod seccomp;
