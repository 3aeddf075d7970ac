//! Maskinporten tokens: sign the grant, fetch the token, cache it per [`TokenKey`].

pub mod cache;
pub mod client;
pub mod grant;
pub mod policy;

pub use cache::{SlotStatus, TokenCache, TokenSlot};
pub use client::{FetchError, TokenEndpoint};
pub use grant::GrantSpec;

use crate::keys::SigningKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A Maskinporten client as the token code needs it.
#[derive(Debug)]
pub struct ClientIdentity {
    pub name: Arc<String>,
    pub client_id: String,
    pub key: Arc<SigningKey>,
}

/// Everything that changes the token: a route with the same key shares the cached token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub client: Arc<String>,
    /// The signing key's thumbprint, so a token fetched with an old key is never taken for a new one's.
    pub key: String,
    pub grant: GrantSpec,
}

pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<client::Issued, FetchError>> + Send + 'a>>;

/// Where the cache gets tokens: Maskinporten's token endpoint in production, a script in the
/// cache's own tests (which run on a paused clock without sockets).
pub trait TokenSource: Send + Sync {
    /// Signs a fresh grant for `client` and exchanges it for a token.
    fn fetch<'a>(&'a self, client: &'a ClientIdentity, grant: &'a GrantSpec) -> FetchFuture<'a>;
}

impl TokenSource for TokenEndpoint {
    fn fetch<'a>(&'a self, client: &'a ClientIdentity, grant: &'a GrantSpec) -> FetchFuture<'a> {
        Box::pin(self.request(&client.client_id, &client.key, grant))
    }
}
