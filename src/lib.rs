//! portvakt: an authenticating egress proxy for Maskinporten.
//!
//! A request's path: [`server`] accepts it and hyper frames it (every byte portvakt reads or
//! writes is hyper's); [`proxy`] is the service, which asks [`pipeline::decide`] whether and how it
//! is sent: its form, the caller (address, API key), the [`route`], the path confined to the
//! route's base, the [`party`] the token is for, a place among the requests served at once, and the
//! token from the [`token`] cache (signed with a key from [`keys`], exchanged at Altinn where the
//! route asks). [`pipeline::headers`] is the one header policy, [`upstream`] the one client,
//! [`body`] the limits on both bodies, [`pipeline::retry`] the 401 rule; every answer portvakt makes
//! itself comes from [`error`]. [`build`] turns a configuration into that pipeline, and [`reload`]
//! swaps in a changed one while it runs.

pub mod admin;
pub mod app;
pub mod body;
pub mod build;
pub mod cause;
pub mod check;
pub mod config;
pub mod consent;
pub mod demo;
pub mod error;
pub mod fault;
pub mod identifiers;
pub mod json_log;
pub mod keygen;
pub mod keys;
pub mod layers;
pub mod log_writer;
pub mod metrics;
pub mod mock;
pub mod party;
pub mod permits;
pub mod pipeline;
pub mod private_file;
pub mod proxy;
pub mod recent;
pub mod reload;
pub mod renew;
pub mod request_id;
pub mod route;
pub mod secret;
pub mod server;
pub mod status_page;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod token;
pub mod token_command;
pub mod upstream;
