//! SMTP, sans I/O: protocol state machines that take bytes and return events and bytes to
//! send. The tokio listener and the delivery client drive them.

pub mod client;
pub mod server;

pub use server::{
    BareLineEnds, Event, MailParams, Password, RcptParams, Reply, Server, ServerConfig,
};
