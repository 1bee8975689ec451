//! synguard's controller, as a library: the `synguard` binary is a thin CLI over it, and the
//! integration tests and the lab use the same pieces.
//!
//! By job, in the order a run goes through them:
//! - `cli`: what the operator asked for (clap types, the config file under the flags, the
//!   verbs that talk to a running synguard);
//! - `config`: what the tunables mean, pure and checked (ports, CIDR lists, the data path's
//!   settings);
//! - `host`: what this host allows and has (capabilities, interfaces, sysctls, the state
//!   directory, the facts a SYN-ACK depends on);
//! - `datapath`: the XDP program (embedded objects, load and attach, typed maps, pins);
//! - `daemon`: a running synguard (the run loop, one instance per interface, `auto`'s
//!   follower and baseline, attack events);
//! - `control`: the control socket's protocol, shared by the daemon and the verbs;
//! - `telemetry`: Prometheus metrics and the operational events they count.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod host;
pub mod sync;
pub mod telemetry;

pub use error::Error;
