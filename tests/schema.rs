//! `portvakt schema`: the configuration's JSON Schema, made from the declarations the reader takes
//! its keys from (`src/config/schema.rs`). An independent validator, `check-jsonschema` from PyPI
//! (scripts/test-deps.sh installs it under target/), checks that it is a valid draft 2020-12 schema,
//! that every configuration we ship or document passes it, and that it and the reader give the same
//! verdict on a table of good and bad configurations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixtures;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> PathBuf {
    let path = root().join("target/check-jsonschema/bin/check-jsonschema");
    assert!(
        path.exists(),
        "{} is missing: scripts/test-deps.sh installs check-jsonschema",
        path.display()
    );
    path
}

/// The schema, written where the validator can read it.
fn schema_file(dir: &Path) -> PathBuf {
    let path = dir.join("portvakt.schema.json");
    let schema = portvakt::config::schema::json_schema();
    std::fs::write(&path, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portvakt-schema-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether check-jsonschema accepts `file`, with what it said.
fn schema_accepts(schema: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(validator())
        .arg("--schemafile")
        .arg(schema)
        .arg(file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The `portvakt.yaml: |` block of a Kubernetes ConfigMap, unindented.
fn embedded_configs(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = manifest.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with("portvakt.yaml: |") {
            let indent = line.len() - line.trim_start().len() + 2;
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
                .map(|l| l.get(indent..).unwrap_or(""))
                .collect();
            out.push(body.join("\n") + "\n");
        }
    }
    out
}

/// The ```yaml blocks of a Markdown file that are configurations: whole ones (top-level
/// `clients:` and `routes:`), and lists of routes, put under `routes:` of a minimal whole one.
fn documented_configs(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let blocks = markdown.split("```yaml\n").skip(1).map(|rest| {
        rest.lines()
            .take_while(|l| l.trim() != "```")
            .collect::<Vec<_>>()
            .join("\n")
    });
    for block in blocks {
        let block = block.as_str();
        if block.lines().any(|l| l.starts_with("clients:"))
            && block.lines().any(|l| l.starts_with("routes:"))
        {
            out.push(block.to_string() + "\n");
            continue;
        }
        let first = block
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if let Some(first) = first.filter(|l| l.trim_start().starts_with("- name:")) {
            let indent = first.len() - first.trim_start().len();
            let routes: Vec<&str> = block
                .lines()
                .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
                .collect();
            out.push(format!(
                "listen: 127.0.0.1:8080\nmaskinporten:\n  environment: test\nclients:\n  c:\n    client_id: x\n    key: {{pem: k.pem}}\nroutes:\n{}\n",
                routes.join("\n")
            ));
        }
    }
    out
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

#[test]
fn the_schema_is_draft_2020_12_and_every_shipped_and_documented_config_passes_it() {
    let dir = scratch("shipped");
    let schema = schema_file(&dir);
    let meta = Command::new(validator())
        .arg("--check-metaschema")
        .arg(&schema)
        .output()
        .unwrap();
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stdout)
    );

    let mut files: Vec<(String, String)> = Vec::new();
    let mut add_file = |path: PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap();
        files.push((path.display().to_string(), text));
    };
    add_file(root().join("config/portvakt.example.yaml"));
    add_file(root().join("deploy/debian/portvakt.yaml"));
    for entry in std::fs::read_dir(root().join("config/examples")).unwrap() {
        add_file(entry.unwrap().path());
    }
    for entry in std::fs::read_dir(root().join("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, config) in embedded_configs(&text).into_iter().enumerate() {
                files.push((format!("{} (ConfigMap {i})", path.display()), config));
            }
        }
    }
    let mut docs = vec![root().join("README.md")];
    markdown_files(&root().join("docs"), &mut docs);
    for path in docs {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, config) in documented_configs(&text).into_iter().enumerate() {
            files.push((format!("{} (block {i})", path.display()), config));
        }
    }
    assert!(files.len() >= 17, "{}", files.len());
    let mut failed = Vec::new();
    for (i, (name, text)) in files.iter().enumerate() {
        let file = dir.join(format!("config-{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        let (ok, said) = schema_accepts(&schema, &file);
        if !ok {
            failed.push(format!("{name}: {said}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

const GOOD: &str = r#"listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9090
maskinporten:
  environment: test
  timeout_seconds: 10
clients:
  vendor:
    client_id: 5f0c3a6e-0000-4000-8000-000000000001
    key:
      pem: client-a.pem
      kid: vendor-TEST.2026-11
routes:
  - name: nav
    prefix: /nav/
    upstream: https://api.nav.no/
    client: vendor
    scopes: [nav:forsikring/samtykke]
"#;

/// (what is changed, the configuration)
fn table() -> Vec<(&'static str, String)> {
    let route = |extra: &str| format!("{GOOD}{extra}");
    vec![
        ("the base", GOOD.to_string()),
        (
            "a consent route",
            route("    consent_per_call: true\n    consent_tokens_max: 500\n"),
        ),
        (
            "parties, headers and keys",
            route("    consumer_orgs: [\"910753614\", 889640782]\n    headers:\n      X-Api: abc\n      X-File: {value_file: fiks-integrasjonpassord.txt}\n    api_keys: [\"0123456789abcdef0123\"]\n"),
        ),
        (
            "system users both ways",
            route("    systemuser_orgs: [\"910753614\", {org: \"889640782\", externalRef: x}]\n"),
        ),
        (
            "a proxy as a word and as a mapping",
            GOOD.replace(
                "  timeout_seconds: 10\n",
                "  timeout_seconds: 10\n  proxy: none\negress_proxy:\n  url: http://proxy.example:3128\n  no_proxy: .internal.example\n",
            ),
        ),
        (
            "inbound and telemetry",
            format!("{GOOD}inbound:\n  max_header_bytes: 16384\n  min_body_rate_bytes_per_second: 0\ntelemetry:\n  otlp_endpoint: http://127.0.0.1:4318\n  sample_ratio: 0.25\n"),
        ),
        ("a single scope as a string", GOOD.replace("scopes: [nav:forsikring/samtykke]", "scopes: nav:forsikring/samtykke")),
        ("an unknown top-level key", format!("{GOOD}listne: 1\n")),
        ("a misspelt route key", route("    scpoe: [x]\n")),
        ("a timeout of 0", GOOD.replace("timeout_seconds: 10", "timeout_seconds: 0")),
        ("a timeout as a word", GOOD.replace("timeout_seconds: 10", "timeout_seconds: soon")),
        ("a boolean as a string", route("    retry_on_401: \"yes\"\n")),
        ("an unknown environment", GOOD.replace("environment: test", "environment: staging")),
        ("an unknown address header", route("    forward_caller_address: proxy\n")),
        ("a consent bound of 0", route("    consent_per_call: true\n    consent_tokens_max: 0\n")),
        ("a small header limit", format!("{GOOD}inbound:\n  max_header_bytes: 100\n")),
        ("a sample ratio of 2", format!("{GOOD}telemetry:\n  otlp_endpoint: http://127.0.0.1:4318\n  sample_ratio: 2\n")),
        ("a route without scopes", GOOD.replace("    scopes: [nav:forsikring/samtykke]\n", "")),
        ("a client without client_id", GOOD.replace("    client_id: 5f0c3a6e-0000-4000-8000-000000000001\n", "")),
        ("a header value of the wrong shape", route("    headers:\n      X-File: {file: x}\n")),
        ("authorization_details without a type", route("    authorization_details:\n      - id: x\n")),
        ("routes as a mapping", GOOD.replace("routes:\n  - name: nav", "routes:\n  nav:\n    name: nav")),
        ("a list where a mapping goes", format!("{GOOD}inbound: [a]\n")),
        ("a key with an unknown field", GOOD.replace("      kid: vendor-TEST.2026-11\n", "      kid: vendor-TEST.2026-11\n      pin: 1234\n")),
    ]
}

#[test]
fn the_schema_and_the_reader_agree_on_a_table_of_good_and_bad_configs() {
    let dir = scratch("agree");
    let schema = schema_file(&dir);
    let no_env = |_: &str| None;
    let mut disagree = Vec::new();
    let (mut good, mut bad) = (0, 0);
    for (i, (what, yaml)) in table().into_iter().enumerate() {
        let reader =
            portvakt::config::from_str(&yaml, Path::new("portvakt.yaml"), &fixtures(), &no_env);
        let file = dir.join(format!("case-{i}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let (schema_ok, said) = schema_accepts(&schema, &file);
        if reader.is_ok() {
            good += 1;
        } else {
            bad += 1;
        }
        if reader.is_ok() != schema_ok {
            let reader = match reader {
                Ok(_) => "accepted".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            disagree.push(format!(
                "{what}: the reader {reader}; the schema {}",
                if schema_ok {
                    "accepted".into()
                } else {
                    format!("refused: {said}")
                }
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
    assert!(good >= 6 && bad >= 15, "{good} good, {bad} bad");
}

#[test]
fn every_key_the_reference_documents_for_a_route_is_described_in_the_schema() {
    let schema = portvakt::config::schema::json_schema();
    let route = &schema["properties"]["routes"]["items"]["properties"];
    let undescribed: Vec<&String> = route
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.get("description").is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(undescribed.is_empty(), "{undescribed:?}");
    assert!(route["consent_per_call"]["description"]
        .as_str()
        .unwrap()
        .contains("Altinn 3 consent per call"));
}
