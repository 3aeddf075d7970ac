//! What the command line does besides serving: check a configuration, make keys, fetch a token,
//! show the demo. (`main.rs` reads the command line; `run` serves, through `app`.)

pub mod check;
pub mod demo;
pub mod health;
pub mod keygen;
pub mod token;
