//! The admin listener's `/`: one self-contained HTML page (inline CSS, no scripts, no external
//! assets) that tells a person whether every integration works, and if not, why. It shows routes,
//! token states, keys and recent errors; never a token, key or secret header value.

use crate::keys::client_key::{expiry_warning, not_after};
use crate::observe::recent::RecentError;
use crate::proxy::Proxy;
use crate::support::time::{date, datetime};
use crate::token::{SlotStatus, TokenSlot};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}
header{background:#1d2433;color:#fff;padding:14px 28px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{margin:0;font-size:22px}
header .summary{font-size:16px}
main{padding:8px 28px 28px;max-width:1400px}
h2{font-size:17px;margin:26px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:13px;text-transform:uppercase;letter-spacing:.03em}
code{font:13px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:13px}
.ok{background:#d8f3df;color:#135d26}.warn{background:#fff1c7;color:#7a5300}.bad{background:#fddcdc;color:#8f1a1a}.idle{background:#e6e8ec;color:#3c4455}
.nowrap{white-space:nowrap}
.hint{color:#8f1a1a;margin-top:3px}.muted{color:#5e6778;font-size:13px}
footer{padding:0 28px 24px;color:#5e6778;font-size:13px}
";

/// The page as it is now.
pub fn render(proxy: &Proxy) -> String {
    let snapshot = proxy.snapshot();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut tokens = Vec::new();
    let mut clients: Vec<Arc<crate::token::ClientIdentity>> = Vec::new();
    for route in snapshot.routes.iter() {
        for (party, slot) in route.parties.slots() {
            let client = slot.client();
            if !clients.iter().any(|c| Arc::ptr_eq(c, client)) {
                clients.push(Arc::clone(client));
            }
            tokens.push(TokenRow {
                route: route.name.as_str(),
                party: party.map(|(kind, org)| format!("{} {org}", kind.as_str())),
                slot,
                status: slot.status(),
            });
        }
    }
    let mut page = String::with_capacity(16 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>portvakt status</title><style>{STYLE}</style></head><body>\
         <header><h1>portvakt</h1><div class=\"summary\">{}</div>\
         <div class=\"muted\">{} routes · {} in flight · version {}</div></header><main>",
        summary(&tokens),
        snapshot.routes.iter().count(),
        proxy.in_flight(),
        env!("CARGO_PKG_VERSION"),
    );
    routes_table(&mut page, &snapshot);
    tokens_table(&mut page, &tokens, now);
    clients_table(&mut page, &clients, now);
    errors_table(&mut page, &proxy.recent.list());
    let _ = write!(
        page,
        "</main><footer>Generated {} · refreshes every 10 s · machine-readable: <a href=\"/readyz\">/readyz</a>, <a href=\"/metrics\">/metrics</a></footer></body></html>",
        datetime(now)
    );
    page
}

/// The header's badge: how many tokens fail, or how many are valid.
fn summary(tokens: &[TokenRow<'_>]) -> String {
    let failing = tokens
        .iter()
        .filter(|t| matches!(t.status.state, "failing" | "stale"))
        .count();
    let valid = tokens
        .iter()
        .filter(|t| matches!(t.status.state, "valid" | "refreshing"))
        .count();
    if failing > 0 {
        format!(
            "<span class=\"state bad\">{failing} of {} tokens failing</span>",
            tokens.len()
        )
    } else {
        format!(
            "<span class=\"state ok\">{valid} of {} tokens valid</span> <span class=\"muted\">(the others are fetched on first use)</span>",
            tokens.len()
        )
    }
}

fn routes_table(page: &mut String, snapshot: &crate::pipeline::Snapshot) {
    page.push_str("<h2 id=\"routes\">Routes</h2><table><tr><th>Route</th><th>Prefix</th><th>Upstream</th><th>Client</th><th>Scopes</th><th>Acts for</th></tr>");
    for route in snapshot.routes.iter() {
        let slots = route.parties.slots();
        let scopes = slots
            .first()
            .map(|(_, s)| s.key().grant.scope.clone())
            .unwrap_or_default();
        let acts_for = acts_for(&slots);
        let _ = write!(
            page,
            "<tr><td><b>{}</b></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&route.name),
            esc(&route.prefix),
            esc(&route.upstream.to_string()),
            esc(&route.client),
            esc(&scopes),
            acts_for,
        );
    }
    page.push_str("</table>");
}

fn tokens_table(page: &mut String, tokens: &[TokenRow<'_>], now: i64) {
    page.push_str("<h2 id=\"tokens\">Tokens</h2><table><tr><th>Route</th><th>Kind</th><th>Acts for</th><th>State</th><th>Details</th></tr>");
    for t in tokens {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t.route),
            t.slot.kind(),
            esc(t.party.as_deref().unwrap_or(
                t.slot
                    .key()
                    .grant
                    .consumer_org
                    .as_deref()
                    .unwrap_or("own organisation")
            )),
            state_badge(&t.status),
            state_details(&t.status, now),
        );
    }
    page.push_str("</table>");
}

fn clients_table(page: &mut String, clients: &[Arc<crate::token::ClientIdentity>], now: i64) {
    page.push_str("<h2 id=\"clients\">Clients and keys</h2><table><tr><th>Client</th><th>client_id</th><th>Key</th><th>Certificate</th><th>Expires</th></tr>");
    for client in clients {
        let (_, key) = client.key.current();
        let certificate = key.certificate().map_or_else(
            || "<span class=\"muted\">none (registered key)</span>".to_string(),
            |c| {
                format!(
                    "{}<div class=\"muted\">org {} · issuer {}</div>",
                    esc(&c.subject),
                    esc(c.org_number.as_deref().unwrap_or("-")),
                    esc(&c.issuer)
                )
            },
        );
        let expires = match not_after(&key) {
            Some(end) => {
                let days = (end - now).div_euclid(86_400);
                let class = if days < 0 {
                    "bad"
                } else if days <= 30 {
                    "warn"
                } else {
                    "ok"
                };
                let mut cell = format!(
                    "<span class=\"state {class}\">{} ({days} days)</span>",
                    date(end)
                );
                if let Some(warning) = expiry_warning(&key, now) {
                    let _ = write!(cell, "<div class=\"hint\">{}</div>", esc(&warning));
                }
                cell
            }
            None => "<span class=\"muted\">unknown (no certificate, no date in the kid)</span>"
                .to_string(),
        };
        let renewal = match key.registration() {
            None => String::new(),
            Some(r) => match r.last_pass {
                Some(t) if now - t > 48 * 3600 => format!(
                    "<div class=\"hint\">renewed by portvakt; no renewal pass has succeeded since {}: check <code>portvakt rotate</code></div>",
                    datetime(t)
                ),
                Some(t) => format!(
                    "<div class=\"muted\">renewed by portvakt · last pass {}</div>",
                    datetime(t)
                ),
                None => "<div class=\"muted\">renewed by portvakt · no pass yet</div>".into(),
            },
        };
        let _ = write!(
            page,
            "<tr><td><b>{}</b></td><td><code>{}</code></td><td>{} · <code>{}</code>{renewal}</td><td>{}</td><td>{}</td></tr>",
            esc(&client.name),
            esc(&client.client_id),
            key.form(),
            esc(&key.label()),
            certificate,
            expires,
        );
    }
    page.push_str("</table>");
}

fn errors_table(page: &mut String, recent: &[RecentError]) {
    page.push_str("<h2 id=\"errors\">Recent errors</h2>");
    if recent.is_empty() {
        page.push_str("<p class=\"muted\">None since start.</p>");
    } else {
        page.push_str("<table><tr><th>When</th><th>Route</th><th>Status</th><th>Problem</th><th>Message</th><th>Request id</th></tr>");
        for e in recent {
            page.push_str(&error_row(e));
        }
        page.push_str("</table>");
    }
}

struct TokenRow<'a> {
    route: &'a str,
    party: Option<String>,
    slot: &'a Arc<TokenSlot>,
    status: SlotStatus,
}

fn acts_for(slots: &[(Option<crate::request::party::Party<'_>>, &Arc<TokenSlot>)]) -> String {
    let parties: Vec<String> = slots
        .iter()
        .filter_map(|(party, slot)| match party {
            Some((kind, org)) => Some(format!("{} {}", kind.as_str(), esc(org))),
            None => slot
                .key()
                .grant
                .consumer_org
                .as_deref()
                .map(|org| format!("consumer {}", esc(org))),
        })
        .collect();
    if parties.is_empty() {
        "<span class=\"muted\">own organisation</span>".into()
    } else {
        parties.join("<br>")
    }
}

fn state_badge(s: &SlotStatus) -> String {
    let class = match s.state {
        "valid" => "ok",
        "refreshing" | "fetching" => "warn",
        "failing" | "stale" => "bad",
        _ => "idle",
    };
    format!("<span class=\"state {class}\">{}</span>", s.state)
}

fn state_details(s: &SlotStatus, now: i64) -> String {
    let mut out = match (s.state, s.expires_in_seconds) {
        ("stale", Some(n)) => {
            format!("Maskinporten unavailable; the cached token serves until it expires in {n} s")
        }
        (_, Some(n)) => format!("valid for {n} s"),
        ("empty", None) => "not fetched yet: fetched on the first request".into(),
        ("fetching", None) => "fetching now".into(),
        _ => String::new(),
    };
    if let Some(error) = &s.error {
        let since = s.failing_since_unix.map_or_else(String::new, |t| {
            format!(" since {} ({} s ago)", datetime(t as i64), now - t as i64)
        });
        let code = s
            .code
            .as_deref()
            .map_or_else(String::new, |c| format!("<b>{}</b> ", esc(c)));
        let _ = write!(
            out,
            "<div class=\"hint\">failing{}: {code}{}</div>",
            esc(&since),
            esc(error)
        );
        if let Some(hint) = &s.hint {
            let _ = write!(out, "<div>What to do: {}</div>", esc(hint));
        }
    }
    out
}

fn error_row(e: &RecentError) -> String {
    let at =
        e.at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
    format!(
        "<tr><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td><td><code class=\"nowrap\">{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
        datetime(at),
        esc(&e.route),
        e.status,
        e.problem,
        esc(&e.message),
        esc(&e.request_id)
    )
}

/// Escapes text for HTML element content and quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
