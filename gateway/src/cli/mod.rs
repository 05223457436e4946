//! The subcommands of `smimegw`, one module each, and the plain-text table writer they share.

pub mod console;
pub mod lineedit;
pub mod message;
pub mod queue;
pub mod serve;
pub mod sntp;
pub mod table;
pub mod token;
pub mod users;
