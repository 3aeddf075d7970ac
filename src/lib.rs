//! portvakt: an authenticating egress proxy for Maskinporten.
//!
//! **A request's path**, in the order it takes: [`server`] accepts it and hyper frames it (every
//! byte portvakt reads or writes is hyper's); [`layers::stack`] passes it through the concerns
//! every request meets (its id, the access log, panics, its place); [`proxy::Decide`] asks
//! [`pipeline::decide`], the one place that decides, whether and how it is sent (its form, the
//! caller, the route, the path kept under the route's base, the party and consent, the token);
//! [`proxy::forward`] sends it under the one header policy ([`pipeline::headers`]) through the one
//! upstream client ([`upstream`]), with the 401 rule ([`pipeline::retry`]). What a request is made
//! of ([`request`]: route, party, place, body, and the errors it is answered with) and the
//! [`consent`] it may carry are shared along the way.
//!
//! **Beside the requests**: the [`token`] cache fetches, refreshes and exchanges tokens, signed
//! with [`keys`] that [`reload::keys`] watches for rotation and that [`renew`] registers at Digdir; [`build`]
//! turns a [`config`] into the pipeline at the start, and [`reload`] swaps in a changed one while
//! it runs; [`app`] starts the listeners.
//!
//! **For the operator**: [`operator`] (the admin listener, the status page) and [`observe`]
//! (metrics, logs, traces). **The command line**: `main.rs` and [`cli`]. [`mock`] holds the mock
//! peers of the tests and the demo; [`support`] the small leaves everyone shares.

// A request's path.
pub mod consent;
pub mod layers;
pub mod pipeline;
pub mod proxy;
pub mod request;
pub mod server;
pub mod upstream;

// Beside the requests.
pub mod app;
pub mod build;
pub mod config;
pub mod keys;
pub mod reload;
pub mod renew;
pub mod token;

// For the operator, and the command line.
pub mod cli;
pub mod observe;
pub mod operator;

pub mod mock;
pub mod support;
