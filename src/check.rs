//! `portvakt check`: what a loaded configuration will do, with every secret left out.

use crate::config::Config;
use std::fmt::Write as _;
use std::path::Path;

pub fn summary(config: &Config, file: &Path) -> String {
    let mut out = String::new();
    let m = &config.maskinporten;
    let _ = writeln!(out, "{}: OK", file.display());
    let _ = writeln!(out, "listen        {}", config.listen);
    match config.admin_listen {
        Some(a) => {
            let _ = writeln!(out, "admin_listen  {a} (/healthz, /readyz, /metrics)");
        }
        None => {
            let _ = writeln!(out, "admin_listen  (none)");
        }
    }
    let _ = writeln!(
        out,
        "maskinporten  {} (issuer {}, token endpoint {})",
        m.environment.as_str(),
        m.issuer,
        m.token_endpoint
    );
    if let Some(ca) = &m.ca_file {
        let _ = writeln!(
            out,
            "              ca_file {} ({} certificates)",
            ca.path.display(),
            ca.certs.len()
        );
    }
    let _ = writeln!(out, "clients:");
    for c in &config.clients {
        let k = &c.key;
        let _ = writeln!(
            out,
            "  {}: client_id {}, key {} (kid {}, {:?}, {} bits, thumbprint {})",
            c.name,
            c.client_id,
            k.form(),
            k.kid(),
            k.algorithm(),
            k.bits(),
            k.thumbprint()
        );
    }
    let _ = writeln!(out, "routes:");
    for r in &config.routes {
        let _ = writeln!(out, "  {}: {} -> {}", r.name, r.prefix, r.upstream);
        let _ = writeln!(
            out,
            "    client {}, scopes {}",
            r.client,
            r.scopes.join(" ")
        );
        if let Some(org) = &r.consumer_org {
            let _ = writeln!(out, "    consumer_org {org} (delegation)");
        }
        if let Some(resource) = &r.resource {
            let _ = writeln!(out, "    resource {resource}");
        }
        if !r.authorization_details.is_empty() {
            let types: Vec<&str> = r
                .authorization_details
                .iter()
                .filter_map(|d| d["type"].as_str())
                .collect();
            let _ = writeln!(out, "    authorization_details {}", types.join(", "));
        }
        if !r.headers.is_empty() {
            let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
            let _ = writeln!(out, "    headers {} (values hidden)", names.join(", "));
        }
        if let Some(ca) = &r.ca_file {
            let _ = writeln!(
                out,
                "    ca_file {} ({} certificates)",
                ca.path.display(),
                ca.certs.len()
            );
        }
        let _ = writeln!(out, "    timeout {} s", r.timeout.as_secs());
    }
    out
}
