//! smimegw: the S/MIME gateway. The library holds the engine and the protocol cores;
//! `main.rs` is the command.

pub mod admin;
pub mod ca;
pub mod config;
pub mod fsutil;
pub mod keys;
pub mod ldap;
pub mod mailbox;
pub mod policy;
pub mod relay;
pub mod revocation;
pub mod smime;
pub mod smtp;
pub mod sntp;
pub mod spool;
pub mod store;
pub mod throttle;
pub mod users;
pub mod web;
