//! The HTTP/JSON API on the daemon's unix socket (`server`), and the client the CLI and the
//! demo use (`client`, and `wait` for a service to converge).

pub mod client;
pub mod error;
pub mod images;
pub mod server;
pub mod wait;
