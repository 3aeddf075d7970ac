//! What a request is made of on its way: its [`route`], the [`party`] its token is for, its place
//! among the requests served at once ([`permits`]), its [`body`] in both directions under the
//! route's limits, and the [`error`]s it can be answered with (the one problem+json answer).

pub mod body;
pub mod error;
pub mod party;
pub mod permits;
pub mod problem;
pub mod route;
