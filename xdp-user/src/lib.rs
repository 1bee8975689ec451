//! synguard's controller, as a library: the `synguard` binary is a thin CLI over it, and the
//! integration tests and the lab use the same pieces.
//!
//! A run goes through the modules in this order:
//! `cli` (what to do) -> `preflight` (can we?) -> `settings` and `sysctl` (what the namespace
//! needs and allows) -> `loader` (load, configure, attach) -> `maps` (typed access) ->
//! `metrics` (Prometheus over HTTP).

pub mod attack;
pub mod baseline;
pub mod btf;
pub mod cli;
pub mod config_file;
pub mod control;
pub mod daemon;
pub mod error;
pub mod events;
pub mod follow;
pub mod host_facts;
pub mod lists;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod metrics_ops;
pub mod objects;
pub mod pins;
pub mod ports;
pub mod preflight;
pub mod run;
pub mod settings;
pub mod state;
pub mod sysctl;
pub mod tune;
pub mod verbs;

pub use error::Error;
