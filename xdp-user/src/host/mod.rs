//! What this host allows and has: capabilities and interfaces (checked before anything
//! changes), the namespace's sysctls, the state directory and its locks, and the facts a
//! SYN-ACK depends on (sysctls, MTU, routes), polled, and the ports it listens on.

pub mod facts;
pub mod listeners;
pub mod preflight;
pub mod state;
pub mod sysctl;
