//! The local control API: a unix socket per protected interface, in the state directory
//! (root-owned, the socket mode 0660), one JSON request and one JSON response per connection,
//! each a line. `protocol` holds the messages, the same types on both ends; `transport` the
//! socket: the daemon's side hands every request to its main loop, which owns the attachment,
//! the sysctls and `auto`'s follower; the CLI verbs (`cli::verbs`) are the client side.

pub mod protocol;
pub mod transport;

pub use protocol::{ListKind, Request};
pub use transport::{Pending, bind, request, serve, socket_path};
