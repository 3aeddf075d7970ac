//! portvakt: an authenticating egress proxy for Maskinporten.
//!
//! A request's path: [`server`] accepts it; [`lane`] serves plain HTTP/1.1 calls with small bodies or none to
//! plain-HTTP upstreams itself and hands every other connection to hyper, where [`proxy`] checks the caller (address, API key) and the
//! request's form, matches a [`route`], picks the [`party`] the
//! token is for, gets the token from the [`token`] cache (signed with a key from [`keys`], and
//! exchanged at Altinn where the route asks), injects it and streams the call through
//! [`upstream`] (directly or through an outbound proxy) with [`body`] limits both ways, retrying
//! once with a fresh token on a 401; every answer portvakt makes itself comes from [`error`].
//! [`reload`] swaps in a changed configuration while it runs.

pub mod admin;
pub mod app;
pub mod body;
pub mod build;
pub mod cause;
pub mod check;
pub mod config;
pub mod demo;
pub mod error;
pub mod fault;
pub mod json_log;
pub mod keygen;
pub mod keys;
pub mod log_writer;
pub mod metrics;
pub mod mock;
pub mod party;
pub mod pipeline;
pub mod proxy;
pub mod recent;
pub mod reload;
pub mod request_id;
pub mod route;
pub mod secret;
pub mod server;
pub mod status_page;
pub mod sync;
pub mod telemetry;
pub mod token;
pub mod token_command;
pub mod upstream;
