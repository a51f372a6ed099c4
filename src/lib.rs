//! routemesh: a service load balancer and routing mesh for Linux hosts.
//!
//! Request path: `cli` -> `api` (client, then server) -> `validate` (syntax) -> `control`
//! (checks against the state, one compare-and-set transaction) -> `store`; `orchestrator`
//! turns services into tasks; `agent` plans (`agent::plan`, pure) and applies
//! (`agent::apply`) each node, running tasks with `agent::runner`.
//!
//! # Layers
//!
//! Modules, top to bottom. A module uses only modules on the levels below its own, never one
//! above it nor (unless `SAME_LEVEL` in `src/layers.rs` allows the pair, and it allows none
//! today) one beside it. `src/layers.rs` holds this table and checks every `crate::` path of
//! `src/` against it, and checks that this list mirrors it.
//!
//! 1. `cli`: the command line; runs the daemon, the demo and the whoami workload
//! 2. `demo`: a cluster on one machine, driven over the API like the CLI
//! 3. `daemon`: wires store, membership, agent, orchestrator and API together
//! 4. `api`: the server (validates, calls `control`, reads the store, asks the agent's
//!    `NodeContext` where a task's files are) and the client with its converge wait
//! 5. `agent`, `orchestrator`, `membership`: the store's followers, each on its own
//! 6. `control`, `config`: the writes behind the API; the daemon's settings. Both sit below
//!    the agent, which deletes tasks with `control::delete_task` and takes its IPVS timeouts
//!    from `config`, and above `validate`, whose checks they reuse
//! 7. `validate`: the syntax of every request, into typed requests
//! 8. `store`: the key-value interface, its local and etcd backends, the key layout
//! 9. `topology`: nodes and etcd in namespaces on one machine (demo, tests)
//! 10. `wire`, `listeners`: the API's bodies; who listens on a port (both read `model`)
//! 11. `model`, `ipam`, `layout`, `whoami`, `memory`: the vocabulary and leaf helpers

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod ipam;
pub mod layout;
pub mod listeners;
pub mod membership;
pub mod memory;
pub mod model;
pub mod orchestrator;
pub mod store;
pub mod topology;
pub mod validate;
pub mod whoami;
pub mod wire;

#[cfg(test)]
mod layers;
