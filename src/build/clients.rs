//! The outbound clients a build makes: rustls for every outbound connection, the token endpoint,
//! and one upstream client per distinct TLS trust, connect timeout, proxy and HTTP/2 setting.

use crate::config::{Config, Egress, RouteConfig};
use crate::request::body::UpstreamBody;
use crate::token::{client, TokenEndpoint};
use anyhow::Context as _;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The TLS configuration for outbound connections: rustls with the Mozilla roots, plus the CA
/// certificates in `extra_roots` (a route's `ca_file`).
pub fn tls_config(extra_roots: &[CertificateDer<'static>]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .context("a ca_file certificate is not a usable CA certificate")?;
    }
    tls_config_trusting(roots)
}

/// The TLS configuration for outbound connections that trust `roots` and nothing else.
pub fn tls_config_trusting(roots: rustls::RootCertStore) -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The configured Maskinporten token endpoint, over `tls` (plus `maskinporten.ca_file`).
pub fn token_endpoint(
    config: &Config,
    tls: &rustls::ClientConfig,
) -> anyhow::Result<TokenEndpoint> {
    let token_tls = match &config.maskinporten.ca_file {
        Some(ca) => tls_config(&ca.certs)
            .with_context(|| format!("maskinporten.ca_file: {}", ca.path.display()))?,
        None => tls.clone(),
    };
    let http = client::http_client(
        token_tls,
        config.maskinporten.timeout,
        config.maskinporten.connect_timeout,
        &config.maskinporten.proxy,
    )
    .context("building the token endpoint client")?;
    Ok(TokenEndpoint::new(
        http,
        config.maskinporten.token_endpoint.clone(),
        config.maskinporten.issuer.clone(),
    ))
}

/// One upstream client per distinct TLS trust, connect timeout, proxy and HTTP/2 setting;
/// routes that agree on all four share one, and its connections to each upstream.
pub(super) struct UpstreamClients {
    tls: rustls::ClientConfig,
    made: Vec<(UpstreamKind, UpstreamClient)>,
}

type UpstreamClient = crate::upstream::Client<UpstreamBody>;

/// What sets two routes' upstream clients apart: extra CA file, connect timeout, proxy, HTTP/2.
type UpstreamKind = (Option<PathBuf>, Duration, Egress, bool);

impl UpstreamClients {
    pub(super) fn new(tls: rustls::ClientConfig) -> Self {
        UpstreamClients {
            tls,
            made: Vec::new(),
        }
    }

    /// The route's upstream client: one already made for the same kind, or a new one.
    pub(super) fn get(&mut self, r: &RouteConfig) -> anyhow::Result<&mut UpstreamClient> {
        let key = (
            r.ca_file.as_ref().map(|c| c.path.clone()),
            r.connect_timeout,
            r.proxy.clone(),
            r.upstream_http2,
        );
        let made = match self.made.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let tls = match &r.ca_file {
                    None => self.tls.clone(),
                    Some(ca) => {
                        tls_config(&ca.certs).with_context(|| ca.path.display().to_string())?
                    }
                };
                let client =
                    UpstreamClient::new(tls, r.connect_timeout, &r.proxy, r.upstream_http2);
                self.made.push((key, client));
                self.made.len() - 1
            }
        };
        Ok(&mut self.made[made].1)
    }
}
