//! The HTTP/JSON API on the daemon's unix socket, and the client the CLI uses.

pub mod client;
pub mod error;
pub mod server;
