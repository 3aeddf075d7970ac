//! Maskinporten tokens: sign the grant, fetch the token, cache it per [`TokenKey`].

pub mod altinn;
pub mod breaker;
pub mod cache;
pub mod client;
pub mod clock;
pub mod consents;
mod fetch;
pub mod fetch_error;
pub mod grant;
pub mod policy;
pub mod slot;

pub use altinn::AltinnExchange;
pub use cache::TokenCache;
pub use client::TokenEndpoint;
pub use consents::ConsentSlots;
pub use fetch_error::FetchError;
pub use grant::GrantSpec;
pub use slot::{SlotStatus, TokenSlot};

use crate::keys::{ClientKey, SigningKey};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A Maskinporten client as the token code needs it. Its key may be rotated while it runs.
#[derive(Debug)]
pub struct ClientIdentity {
    pub name: Arc<String>,
    pub client_id: String,
    pub key: Arc<ClientKey>,
}

/// Everything that changes the token: routes with the same client and grant share one cache slot.
/// The key is part of the cache key too, by generation: each cached token remembers the key
/// generation that signed its grant and is served only while that key is the client's current
/// one, so a token fetched with an old key is never taken for one from the new.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub client: Arc<String>,
    pub grant: GrantSpec,
}

pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<client::Issued, FetchError>> + Send + 'a>>;

/// Where the cache gets tokens: Maskinporten's token endpoint in production, a script in the
/// cache's own tests (which run on a paused clock without sockets).
pub trait TokenSource: Send + Sync {
    /// Signs a fresh grant for `client_id` with `key` and exchanges it for a token.
    fn fetch<'a>(
        &'a self,
        client_id: &'a str,
        key: &'a SigningKey,
        grant: &'a GrantSpec,
    ) -> FetchFuture<'a>;
}

impl TokenSource for TokenEndpoint {
    fn fetch<'a>(
        &'a self,
        client_id: &'a str,
        key: &'a SigningKey,
        grant: &'a GrantSpec,
    ) -> FetchFuture<'a> {
        Box::pin(self.request(client_id, key, grant))
    }
}
