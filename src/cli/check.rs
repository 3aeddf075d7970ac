//! `portvakt check`: what a loaded configuration will do, with every secret left out.

use crate::config::{CaFile, Config, RouteConfig};
use crate::keys::client_key::{created, expiry_warning, not_after};
use crate::keys::SigningKey;
use crate::support::time::date;
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
    ca_line(&mut out, "              ", m.ca_file.as_ref());
    let _ = writeln!(out, "clients:");
    let now = crate::token::grant::unix_now() as i64;
    for c in &config.clients {
        let _ = writeln!(out, "  {}: client_id {}", c.name, c.client_id);
        key_lines(&mut out, &c.key, now);
        if let Some(r) = config.renewals.iter().find(|r| r.client == c.name) {
            renew_lines(&mut out, r);
        }
    }
    if let Some(s) = &config.selfservice {
        let _ = writeln!(
            out,
            "selfservice   {} ({}), administration client {}, {}, scopes {}",
            s.environment,
            s.base_url,
            s.client_id,
            s.key.label(),
            s.scopes.join(" ")
        );
    }
    let _ = writeln!(out, "routes:");
    for r in &config.routes {
        route_lines(&mut out, r);
    }
    out
}

/// What `check` shows about a route: where it goes, for whom, with what; header values hidden.
fn route_lines(out: &mut String, r: &RouteConfig) {
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
    if !r.consumer_orgs.is_empty() {
        let _ = writeln!(
            out,
            "    consumer_orgs {} (per call, header {})",
            r.consumer_orgs.join(", "),
            r.consumer_org_header
        );
    }
    if let Some(user) = &r.systemuser {
        let _ = writeln!(out, "    systemuser_org {}{}", user.org, external_ref(user));
    }
    if !r.systemusers.is_empty() {
        let users: Vec<String> = r
            .systemusers
            .iter()
            .map(|u| format!("{}{}", u.org, external_ref(u)))
            .collect();
        let _ = writeln!(
            out,
            "    systemuser_orgs {} (per call, header {})",
            users.join(", "),
            r.systemuser_org_header
        );
    }
    if let Some(altinn) = &r.altinn_exchange {
        let _ = writeln!(out, "    altinn_exchange {} ({})", altinn.name, altinn.url);
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
    ca_line(out, "    ", r.ca_file.as_ref());
    let _ = writeln!(out, "    timeout {} s", r.timeout.as_secs());
}

/// A `ca_file` line, indented by `indent`: the file and how many certificates it holds.
fn ca_line(out: &mut String, indent: &str, ca: Option<&CaFile>) {
    if let Some(ca) = ca {
        let (path, certs) = (ca.path.display(), ca.certs.len());
        let _ = writeln!(out, "{indent}ca_file {path} ({certs} certificates)");
    }
}

/// What `check` shows about a client's key: form, kid or certificate, org number, validity.
fn key_lines(out: &mut String, k: &SigningKey, now: i64) {
    let _ = writeln!(
        out,
        "    key {} ({:?}, {} bits, thumbprint {})",
        k.form(),
        k.algorithm(),
        k.bits(),
        k.thumbprint()
    );
    if let Some(hsm) = k.hsm() {
        let _ = writeln!(
            out,
            "    in HSM: module {}, token `{}`, key `{}` (signs inside the token)",
            hsm.module.display(),
            hsm.token,
            hsm.label
        );
    }
    match (k.kid(), k.certificate()) {
        (_, Some(cert)) => {
            let _ = writeln!(out, "    certificate {}", cert.subject);
            let _ = writeln!(out, "      issuer {}", cert.issuer);
            let _ = writeln!(
                out,
                "      org number {}",
                cert.org_number
                    .as_deref()
                    .unwrap_or("(none in the subject)")
            );
            let sent = k.x5c().map_or(0, <[String]>::len);
            let _ = writeln!(
                out,
                "      sent as x5c ({})",
                if sent > 1 {
                    format!("leaf and {} chain certificates", sent - 1)
                } else {
                    "leaf only".to_string()
                }
            );
        }
        (Some(kid), None) => {
            let _ = writeln!(out, "    kid {kid}");
        }
        (None, None) => {}
    }
    if let Some(end) = not_after(k) {
        let days = (end - now).div_euclid(86_400);
        let what = if k.certificate().is_some() {
            "not after"
        } else if k.registration().is_some_and(|r| r.exp.is_some()) {
            "Digdir's registration ends"
        } else {
            "registered key removed about"
        };
        let _ = writeln!(out, "      {what} {} ({days} days left)", date(end));
    } else {
        // No certificate and no date in the kid.
        let _ = writeln!(
            out,
            "      created: unknown (registered keys live at most a year after upload)"
        );
    }
    if let (Some(c), None) = (created(k), k.certificate()) {
        let from = if k.registration().is_some() {
            "the keyset"
        } else {
            "the kid"
        };
        let _ = writeln!(out, "      created {} (from {from})", date(c));
    }
    if let Some(warning) = expiry_warning(k, now) {
        let _ = writeln!(out, "      WARNING: {warning}");
    }
}

fn renew_lines(out: &mut String, r: &crate::config::Renewal) {
    let days = |d: std::time::Duration| d.as_secs() / 86_400;
    let n = &r.renew;
    let _ = writeln!(
        out,
        "    renewed by portvakt: a new {}-bit key after {} days or {} days before Digdir's exp (exp sent: {} days), active {} s after registration, the old one kept {} s",
        n.bits,
        days(n.rotate_after),
        days(n.renew_before),
        days(n.key_lifetime),
        n.activate_after.as_secs(),
        n.overlap.as_secs()
    );
    let writer = match &n.kubernetes_secret {
        Some(s) => format!("Secret {}/{} key {}", s.namespace, s.name, s.key),
        None => format!("{}", r.keyset.display()),
    };
    let who = if n.background {
        "portvakt run (background)"
    } else {
        "portvakt rotate"
    };
    let _ = writeln!(out, "    the keyset is written by {who} to {writer}");
}

fn external_ref(user: &crate::config::SystemUser) -> String {
    user.external_ref
        .as_deref()
        .map(|r| format!(" (externalRef {r})"))
        .unwrap_or_default()
}
