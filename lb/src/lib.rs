//! routemesh load balancer: the virtual-service model and its dataplane backends.
//!
//! - [`model`]: what to load-balance ([`LbSpec`]), validated once into [`ValidLbSpec`].
//! - [`nftables`]: the nftables backend; one [`NftBackend`] programs one namespace's table.
//! - [`tracer`]: walks a packet through a rendered nftables ruleset without a kernel.
//!
//! The crate does no namespace handling: effects go through [`NftRunner`], which the caller
//! implements to run `nft -f -` in the right namespace.

pub mod model;
pub mod nftables;
pub mod tracer;

pub use model::{Backend, Frontend, LbSpec, Proto, Snat, SpecError, ValidLbSpec, VirtualService};
pub use nftables::names;
pub use nftables::{
    plan, CommandRunner, NftBackend, NftError, NftRunner, RecordingRunner, SyncMode, SyncReport,
};
