//! The XDP program, from the controller's side: the embedded objects, loading and attaching
//! (or taking over a pinned one), typed access to its maps, the pins that let it outlive a
//! restart, and the kernel's BTF that tells it where listener fields are.

pub mod attack;
pub mod btf;
pub mod dump;
pub mod handshakes;
pub mod loader;
pub mod maps;
pub mod objects;
pub mod owners;
pub mod pins;
