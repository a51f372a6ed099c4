//! routemesh embedded DNS. Folders follow the request path:
//! [`server`] (sockets the daemon opened in a sandbox) -> [`handler`] (validate, answer) ->
//! [`table`] (the immutable per-network name table, shared through a [`Resolver`]), with
//! [`forward`] for names that are not routemesh's. See `README.md` for the record rules.

pub mod forward;
pub mod handler;
mod resolver;
pub mod server;
pub mod table;

#[cfg(test)]
mod testutil;

pub use forward::{CurrentNamespace, ForwardError, Forwarder, ForwarderConfig, UpstreamSockets};
pub use handler::{handle, Outcome, Pending, QueryContext, Transport};
pub use resolver::Resolver;
pub use server::{serve, Limits, Querier, ServeContext, ServerHandle, Sockets};
pub use table::{
    EndpointMode, Input, NetInput, Proto, ServiceInput, Table, TableOptions, TaskInput,
};
