//! routemesh's one nftables layer. Every table of every namespace is built as data
//! ([`model`]), spelled by one renderer ([`render`]), changed by the smallest transaction
//! ([`diff`]), applied by an [`Executor`] ([`NftCmd`] runs `nft -f -` in a namespace,
//! [`NftNetlink`] sends element-only transactions as one netlink batch and the rest with
//! `nft -f`, [`FakeNft`] records for tests) and checked by one packet tracer ([`trace`]) that parses the
//! rendered text back and follows packets across namespaces.
//!
//! ```text
//! owner's builder (lb, netdev, ...) --> Table --diff--> Transaction --render--> nft -f - (NftCmd)
//!                                                                     \--> FakeNft --> trace::Ruleset
//! ```
//!
//! The tables routemesh owns, one per owner, are listed in [`tables`].

pub mod check;
pub mod diff;
mod error;
mod exec;
mod fake;
pub mod model;
pub mod netlink;
pub mod render;
pub mod resync;
pub mod tables;
pub mod trace;
mod txn;

pub use error::NftError;
pub use exec::{Executor, NftCmd, RuleBytes, Step};
pub use fake::FakeNft;
pub use model::*;
pub use netlink::{NetlinkError, NftNetlink};
pub use txn::{Op, Transaction, ELEMENTS_PER_COMMAND};
