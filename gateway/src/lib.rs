//! smimegw: the S/MIME gateway. The library holds the engine; `main.rs` is the command.

pub mod smime;
