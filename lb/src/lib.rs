//! routemesh load balancer: the virtual-service model and its dataplane backends.
//!
//! - [`model`]: what to load-balance ([`LbSpec`]), validated once into [`ValidLbSpec`].
//! - [`nftables`]: the nftables backend; one [`NftBackend`] programs one namespace's table.
//! - [`ipvs`]: the IPVS backend; one [`IpvsBackend`] programs one namespace's IPVS table and
//!   its nft marking table.
//!
//! Tables are built as `routemesh_nft` models and applied through its `Executor` (the caller
//! gives one for the namespace the backend instance is for); the packet tracer that checks
//! them is `routemesh_nft::trace`. The only namespace handling is IPVS's: its socket is opened
//! inside the namespace it programs ([`IpvsBackend::open`]), and [`prepare_namespace`] writes
//! IPVS sysctls there.

pub mod ipvs;
pub mod model;
pub mod nftables;

pub use ipvs::{
    ipvs_available, prepare_namespace, FakeIpvs, IpvsBackend, IpvsBackendError, IpvsSyncReport,
    IpvsTable, PrepareError, Timeouts as IpvsTimeouts,
};
pub use model::{
    Backend, Frontend, LbSpec, Proto, Scheduler, Snat, SpecError, ValidLbSpec, VirtualService,
};
pub use nftables::names;
pub use nftables::{plan, NftBackend, NftSyncError, SyncMode, SyncReport};
