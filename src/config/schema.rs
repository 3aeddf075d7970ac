//! The configuration file's shape, declared once. The reader takes every mapping's known keys from
//! here ([`Section::keys`]), so a key cannot be read without being declared; `portvakt schema`
//! prints the same declarations as a JSON Schema (draft 2020-12), each key described by its row in
//! `docs/configuration.md`, for editors (`# yaml-language-server: $schema=...`). What a value
//! must be beyond its JSON type (a URL, a check digit, a file that exists) stays the reader's to say.

use serde_json::{json, Map, Value};

/// A value's shape.
pub enum Ty {
    /// A string; a number is taken as its text (`consumer_org: 910753614`).
    Str,
    Bool,
    /// A whole number of at least `min`.
    Int(u64),
    /// A number from 0 to 1.
    Ratio,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// One of these whole numbers.
    IntEnum(&'static [u64]),
    /// A list of strings, or one string for a list of one.
    StrList,
    /// A string, or a list of strings (kept as written).
    StrOrList,
    Obj(&'static Section),
    /// A mapping of names to objects (`clients`).
    MapOf(&'static Section),
    ListOf(&'static Section),
    /// A list whose items are a string or an object.
    ListOfStrOr(&'static Section),
    /// A mapping of names to a string or an object (`headers`).
    MapOfStrOr(&'static Section),
    /// A string or an object (a proxy: a URL, `none`, or its settings).
    StrOr(&'static Section),
    /// A list of objects with a string `type`, copied as written (RFC 9396).
    Details,
}

pub struct Field {
    pub key: &'static str,
    pub ty: Ty,
    pub required: bool,
}

const fn f(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: false,
    }
}

const fn req(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        required: true,
    }
}

/// One mapping of the file, and where `docs/configuration.md` describes its keys: the line its
/// table follows, and the prefix its rows give the keys (`pkcs11.`).
pub struct Section {
    pub doc: &'static str,
    pub doc_prefix: &'static str,
    pub fields: &'static [Field],
}

impl Section {
    /// The keys the reader accepts in this mapping.
    pub fn keys(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.key).collect()
    }
}

const SECONDS: Ty = Ty::Int(1);

pub static TOP: Section = Section {
    doc: "## Top level",
    doc_prefix: "",
    fields: &[
        req("listen", Ty::Str),
        f("admin_listen", Ty::Str),
        req("maskinporten", Ty::Obj(&MASKINPORTEN)),
        req("clients", Ty::MapOf(&CLIENT)),
        req("routes", Ty::ListOf(&ROUTE)),
        f("watch_interval_seconds", SECONDS),
        f("inbound", Ty::Obj(&INBOUND)),
        f("egress_proxy", Ty::StrOr(&PROXY)),
        f("shutdown_grace_seconds", Ty::Int(0)),
        f("telemetry", Ty::Obj(&TELEMETRY)),
        f("selfservice", Ty::Obj(&SELFSERVICE)),
    ],
};

pub static MASKINPORTEN: Section = Section {
    doc: "## `maskinporten`",
    doc_prefix: "",
    fields: &[
        req("environment", Ty::Enum(&["prod", "test", "custom"])),
        f("issuer", Ty::Str),
        f("token_endpoint", Ty::Str),
        f("timeout_seconds", SECONDS),
        f("ca_file", Ty::Str),
        f("connect_timeout_seconds", SECONDS),
        f("proxy", Ty::StrOr(&PROXY)),
        f("insecure_http", Ty::Bool),
    ],
};

pub static CLIENT: Section = Section {
    doc: "## `clients.<name>`",
    doc_prefix: "",
    fields: &[
        req("client_id", Ty::Str),
        req("key", Ty::Obj(&KEY)),
        f("renew", Ty::Obj(&RENEW)),
    ],
};

pub static KEY: Section = Section {
    doc: "### `clients.<name>.key`",
    doc_prefix: "",
    fields: &[
        f("pem", Ty::Str),
        f("kid", Ty::Str),
        f("jwk", Ty::Str),
        f("jwk_base64", Ty::Str),
        f("jwk_base64_file", Ty::Str),
        f("pkcs12", Ty::Str),
        f("password", Ty::Str),
        f("password_file", Ty::Str),
        f("alias", Ty::Str),
        f("x5c_chain", Ty::Bool),
        f("pkcs11", Ty::Obj(&PKCS11)),
        f("keyset", Ty::Str),
    ],
};

pub static PKCS11: Section = Section {
    doc: "### `clients.<name>.key`",
    doc_prefix: "pkcs11.",
    fields: &[
        req("module", Ty::Str),
        req("token", Ty::Str),
        req("key", Ty::Str),
        f("pin", Ty::Str),
        f("pin_file", Ty::Str),
    ],
};

pub static SELFSERVICE: Section = Section {
    doc: "`selfservice`:",
    doc_prefix: "",
    fields: &[
        req("environment", Ty::Enum(&["prod", "test", "custom"])),
        f("base_url", Ty::Str),
        req("client_id", Ty::Str),
        req("key", Ty::Obj(&KEY)),
        f("scopes", Ty::StrList),
    ],
};

pub static RENEW: Section = Section {
    doc: "`clients.<name>.renew`:",
    doc_prefix: "",
    fields: &[
        f("key_lifetime_days", Ty::Int(1)),
        f("rotate_after_days", Ty::Int(1)),
        f("renew_before_days", Ty::Int(1)),
        f("activate_after_seconds", Ty::Int(0)),
        f("overlap_seconds", Ty::Int(0)),
        f("bits", Ty::IntEnum(&[2048, 3072, 4096])),
        f("kid_prefix", Ty::Str),
        f("kubernetes_secret", Ty::Obj(&SECRET)),
        f("background", Ty::Bool),
        f("background_interval_seconds", SECONDS),
    ],
};

pub static SECRET: Section = Section {
    doc: "`clients.<name>.renew`:",
    doc_prefix: "kubernetes_secret.",
    fields: &[
        req("namespace", Ty::Str),
        req("name", Ty::Str),
        f("key", Ty::Str),
        f("api_server", Ty::Str),
        f("token_file", Ty::Str),
        f("ca_file", Ty::Str),
    ],
};

pub static ROUTE: Section = Section {
    doc: "## `routes[]`",
    doc_prefix: "",
    fields: &[
        req("name", Ty::Str),
        req("prefix", Ty::Str),
        req("upstream", Ty::Str),
        req("client", Ty::Str),
        req("scopes", Ty::StrList),
        f("consumer_org", Ty::Str),
        f("resource", Ty::StrOrList),
        f("authorization_details", Ty::Details),
        f("headers", Ty::MapOfStrOr(&VALUE_FILE)),
        f("timeout_seconds", SECONDS),
        f("ca_file", Ty::Str),
        f("consumer_orgs", Ty::StrList),
        f("consumer_org_header", Ty::Str),
        f("systemuser_org", Ty::Str),
        f("externalRef", Ty::Str),
        f("systemuser_orgs", Ty::ListOfStrOr(&SYSTEMUSER)),
        f("systemuser_org_header", Ty::Str),
        f("altinn_exchange", Ty::Str),
        f("retry_on_401", Ty::Bool),
        f("retry_body_max_bytes", Ty::Int(0)),
        f("allow", Ty::StrList),
        f("api_keys", Ty::ListOfStrOr(&VALUE_FILE)),
        f("api_key_header", Ty::Str),
        f("max_body_bytes", Ty::Int(1)),
        f("connect_timeout_seconds", SECONDS),
        f("idle_timeout_seconds", SECONDS),
        f("proxy", Ty::StrOr(&PROXY)),
        f("insecure_http", Ty::Bool),
        f("upstream_http2", Ty::Bool),
        f("min_body_rate_bytes_per_second", Ty::Int(0)),
        f("body_rate_grace_seconds", Ty::Int(0)),
        f("body_deadline_seconds", Ty::Int(0)),
        f(
            "forward_caller_address",
            Ty::Enum(&["forwarded", "x-forwarded-for"]),
        ),
        f("consent_per_call", Ty::Bool),
        f("consent_id_header", Ty::Str),
        f("consent_from_header", Ty::Str),
        f("consent_tokens_max", Ty::Int(1)),
    ],
};

pub static SYSTEMUSER: Section = Section {
    doc: "## `routes[]`",
    doc_prefix: "systemuser_orgs.",
    fields: &[req("org", Ty::Str), f("externalRef", Ty::Str)],
};

pub static VALUE_FILE: Section = Section {
    doc: "## `routes[]`",
    doc_prefix: "",
    fields: &[req("value_file", Ty::Str)],
};

pub static PROXY: Section = Section {
    doc: "## `egress_proxy`, `maskinporten.proxy`, `routes[].proxy`",
    doc_prefix: "",
    fields: &[
        req("url", Ty::Str),
        f("username", Ty::Str),
        f("password", Ty::Str),
        f("password_file", Ty::Str),
        f("no_proxy", Ty::Str),
    ],
};

pub static INBOUND: Section = Section {
    doc: "## `inbound`",
    doc_prefix: "",
    fields: &[
        f("allow", Ty::StrList),
        f("allow_any", Ty::Bool),
        f("tls", Ty::Obj(&TLS)),
        f("max_header_bytes", Ty::Int(8192)),
        f("max_concurrent_requests", Ty::Int(1)),
        f("max_concurrent_per_address", Ty::Int(1)),
        f("min_body_rate_bytes_per_second", Ty::Int(0)),
        f("body_rate_grace_seconds", Ty::Int(0)),
        f("body_deadline_seconds", Ty::Int(0)),
        f("answer_stall_seconds", SECONDS),
    ],
};

pub static TLS: Section = Section {
    doc: "## `inbound`",
    doc_prefix: "tls.",
    fields: &[
        req("cert", Ty::Str),
        req("key", Ty::Str),
        f("client_ca", Ty::Str),
    ],
};

pub static TELEMETRY: Section = Section {
    doc: "## `telemetry`",
    doc_prefix: "",
    fields: &[
        req("otlp_endpoint", Ty::Str),
        f("service_name", Ty::Str),
        f("sample_ratio", Ty::Ratio),
    ],
};

/// The whole file as a JSON Schema (draft 2020-12), described from `docs/configuration.md`.
pub fn json_schema() -> Value {
    let mut schema = object(&TOP);
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema["title"] = json!("portvakt configuration");
    schema["description"] = json!("portvakt's YAML configuration (docs/configuration.md). `${NAME}` in a string is taken from the environment.");
    schema
}

/// A string, or a number the reader takes as its text.
fn text() -> Value {
    json!({ "type": ["string", "number"] })
}

fn object(section: &Section) -> Value {
    let mut properties = Map::new();
    for field in section.fields {
        let mut value = ty(&field.ty);
        if let (Some(described), Some(map)) = (describe(section, field.key), value.as_object_mut())
        {
            map.insert("description".into(), json!(described));
        }
        properties.insert(field.key.into(), value);
    }
    let required: Vec<&str> = section
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.key)
        .collect();
    let mut out = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        out["required"] = json!(required);
    }
    out
}

fn ty(t: &Ty) -> Value {
    match t {
        Ty::Str => text(),
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::Int(min) => json!({ "type": "integer", "minimum": min }),
        Ty::Ratio => json!({ "type": "number", "minimum": 0, "maximum": 1 }),
        Ty::Enum(values) => json!({ "enum": values }),
        Ty::IntEnum(values) => json!({ "enum": values }),
        Ty::StrList => json!({ "anyOf": [text(), { "type": "array", "items": text() }] }),
        Ty::StrOrList => {
            json!({ "anyOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] })
        }
        Ty::Obj(s) => object(s),
        Ty::MapOf(s) => json!({ "type": "object", "additionalProperties": object(s) }),
        Ty::ListOf(s) => json!({ "type": "array", "items": object(s) }),
        Ty::ListOfStrOr(s) => json!({ "type": "array", "items": { "anyOf": [text(), object(s)] } }),
        Ty::MapOfStrOr(s) => {
            json!({ "type": "object", "additionalProperties": { "anyOf": [text(), object(s)] } })
        }
        Ty::StrOr(s) => json!({ "anyOf": [{ "type": "string" }, object(s)] }),
        Ty::Details => json!({
            "type": "array",
            "items": { "type": "object", "required": ["type"], "properties": { "type": { "type": "string" } } },
        }),
    }
}

/// The configuration reference, whose tables describe each key.
const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// The meaning column of `key`'s row in the table after the section's heading in the reference.
fn describe(section: &Section, key: &str) -> Option<String> {
    let start = REFERENCE.find(section.doc)? + section.doc.len();
    let region = &REFERENCE[start..];
    let region = &region[..region.find("\n## ").unwrap_or(region.len())];
    let names = [format!("`{}{key}`", section.doc_prefix), format!("`{key}`")];
    let row = region.lines().find(|line| {
        let first = line.split('|').nth(1).unwrap_or_default().trim();
        line.starts_with('|') && names.iter().any(|n| first.split(" / ").any(|k| k == n))
    })?;
    let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
    let meaning = cells.last()?.trim();
    Some(plain(meaning))
}

/// Markdown links as their text.
fn plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}
