//! What the tunables mean: protected ports, allow/deny CIDRs and the data path's settings
//! derived from them.

pub mod lists;
pub mod ports;
pub mod settings;
pub mod text;
pub mod threshold;
pub mod tunables;
