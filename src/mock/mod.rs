//! Test doubles that run for real on loopback: a mock Maskinporten and an echo upstream.
//! Used by `portvakt demo` and the test suite; never by `portvakt run`.

pub mod maskinporten;
pub mod upstream;

pub use maskinporten::{MockClient, MockMaskinporten, Mode};
pub use upstream::EchoUpstream;

/// The mock Maskinporten's own signing key. A fixed, public test key: it signs mock tokens only.
pub const MOCK_SIGNING_KEY_PEM: &str = include_str!("keys/mock-signing.pem");
/// The demo client's key, registered with the mock. A fixed, public test key: never use it elsewhere.
pub const DEMO_CLIENT_KEY_PEM: &str = include_str!("keys/demo-client.pem");
