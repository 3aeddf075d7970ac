//! Every fuzz corpus and regression file, replayed through the checks its target runs
//! (`fuzz/checks.rs`) on the stable toolchain: a crash the fuzzers once found stays fixed, and
//! the checks themselves are built and run by every `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// A fuzz target's name and its checks.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 9] = [
    ("config", checks::config),
    ("config_values", checks::config_values),
    ("path", checks::path),
    ("keys", checks::keys),
    ("key_text", checks::key_text),
    ("answers", checks::answers),
    ("json_log", checks::json_log),
    ("consent", checks::consent),
    ("pipeline", |data| {
        checks::pipeline(data);
    }),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_file_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in TARGETS {
        let seeds = files(&root.join("corpus").join(target));
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seed");
        let regressions = files(&root.join("regressions").join(target));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            let run = std::panic::catch_unwind(|| check(&data));
            assert!(run.is_ok(), "{target}: {} fails its checks", file.display());
        }
    }
}

#[test]
fn the_checks_find_what_they_are_for() {
    // The pipeline's seeds reach the upstream: the check looks at real requests (each count
    // includes the closing request the check sends after the input).
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pipeline");
    for (seed, reached) in [
        ("credentials", 2),
        ("api-key", 2),
        ("party-pipelined", 3),
        ("lane-smuggling", 2),
        ("escapes", 1),
    ] {
        let data = std::fs::read(corpus.join(seed)).unwrap();
        assert_eq!(checks::pipeline(&data), reached, "{seed}");
    }
    // A valid key loads and passes; the seeds hold real files.
    checks::key_text(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/client-a.pem"))
            .unwrap(),
    );
    // The JSON writer's output for a forging attempt parses back to the same text.
    checks::json_log(b"\"},\"level\":\"ERROR\"\n{\"forged\":1}");
    // A date in each of RFC 9110's three forms round-trips.
    for date in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(
            portvakt::token::clock::parse_http_date(date),
            Some(784_111_777),
            "{date}"
        );
    }
    // The path check catches what the lane once sent: a remainder that climbs out of the base.
    let base = portvakt::upstream::Target::from_uri(&"https://api.example/base/".parse().unwrap())
        .unwrap();
    for escape in ["/..", "/%2e%2e/x", "/a/..%2f..", "/%252e%252e"] {
        let sent = base.uri(escape, None).unwrap();
        let caught = std::panic::catch_unwind(|| checks::stays_under_base(&sent, escape));
        assert!(caught.is_err(), "{escape} passed the check");
        assert!(
            portvakt::pipeline::confine(&base, escape, None).is_err(),
            "{escape} was not confined"
        );
    }
}
