//! portvakt: an authenticating egress proxy for Maskinporten.
//!
//! A request's path: [`server`] accepts it, [`proxy`] matches a [`route`], gets a token from the
//! [`token`] cache (signed with a key from [`keys`]), injects it and streams the call through
//! [`upstream`]; every answer portvakt makes itself comes from [`error`].

pub mod admin;
pub mod app;
pub mod check;
pub mod config;
pub mod demo;
pub mod error;
pub mod keygen;
pub mod keys;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod route;
pub mod secret;
pub mod server;
pub mod sync;
pub mod token;
pub mod token_command;
pub mod upstream;
