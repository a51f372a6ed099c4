//! routemesh kernel networking for one node: named network namespaces, links over rtnetlink,
//! the bridge and overlay drivers, task sandboxes, the node's own nftables table and each
//! sandbox's DNS redirect (both built with `routemesh-nft`), and the IPsec (XFRM) SAs and
//! policies of encrypted overlays ([`xfrm`]).
//!
//! Input is always a plain spec from [`spec`], built by the planner without I/O; every
//! `ensure_*` call is idempotent (it changes only what differs) and every `remove_*` call
//! collects all errors instead of stopping at the first.

pub mod bridge;
pub mod dns_redirect;
pub mod error;
pub mod firewall;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod sandbox;
pub mod spec;
pub mod xfrm;

pub use error::{Error, Result};
pub use netlink::{LinkSummary, Netlink};
