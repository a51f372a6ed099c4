//! routemesh: a service load balancer and routing mesh for Linux hosts.
//!
//! Request path, top to bottom: `cli` -> `api` (client, server) -> `validate` -> `control`
//! -> `store`; `orchestrator` turns services into tasks; `agent` plans (`agent::plan`, pure)
//! and applies (`agent::apply`) each node, running tasks with `agent::runner`.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod enter;
pub mod ipam;
pub mod layout;
pub mod listeners;
pub mod membership;
pub mod model;
pub mod orchestrator;
pub mod store;
pub mod topology;
pub mod validate;
pub mod whoami;
pub mod wire;
