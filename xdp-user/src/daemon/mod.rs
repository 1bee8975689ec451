//! A running synguard: the run loop (`run`), one `instance` per protected interface with the
//! control API's handlers, `auto` mode's follower and its learned baseline, and the watch on
//! the config file.

pub mod baseline;
pub mod config_watch;
pub mod follow;
pub mod instance;
pub mod run;
