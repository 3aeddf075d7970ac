//! Path confinement, as a request meets it: the request-target's bytes are parsed as hyper parses
//! them (the http crate's `Uri`), judged by the pipeline's form rule, routed by prefix and confined
//! by `pipeline::confine`, the same calls `pipeline::decide` makes. Whatever portvakt would send
//! must stay under the route's base however the upstream decodes and normalises the path
//! (percent-decoding once or twice, `\` as `/`, `;params` dropped, dot segments resolved), carry
//! the caller's query unchanged, and hold no `#`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portvakt::pipeline::{confine, form};
use portvakt::route::remainder;
use portvakt::upstream::Target;

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a lenient upstream might see the path: backslashes as slashes, params dropped, dot segments
/// resolved; `None` when it climbs above the root.
fn resolve(path: &str) -> Option<Vec<String>> {
    let mut stack: Vec<String> = Vec::new();
    for seg in path.replace('\\', "/").split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            s => stack.push(s.to_string()),
        }
    }
    Some(stack)
}

fuzz_target!(|data: &[u8]| {
    // The request-target as it stands in a request line: `/nav` and whatever the caller wrote.
    let mut target = b"/nav/".to_vec();
    target.extend_from_slice(data);
    let Ok(uri) = http::Uri::try_from(target.as_slice()) else { return };
    let Some(pq) = uri.path_and_query() else { return };
    if !form::is_origin_form(pq.as_str().as_bytes()) {
        return;
    }
    let Some(rest) = remainder("/nav", uri.path()) else { return };
    assert!(!rest.contains(['?', '#']), "{rest:?}");
    let base = Target::from_uri(&"https://api.example/base/".parse().unwrap()).unwrap();
    let Ok(sent) = confine(&base, rest, uri.query()) else { return };
    let path = sent.path();
    assert!(!sent.to_string().contains('#'), "{sent}");
    assert_eq!(sent.query(), uri.query(), "the query changed");
    assert!(path.starts_with("/base"), "{path}");
    for decoded in [decode(path), decode(&decode(path))] {
        let segments = resolve(&decoded);
        assert!(
            segments.as_ref().and_then(|s| s.first()).map(String::as_str) == Some("base"),
            "{target:?} leaves /base once decoded: {decoded:?}"
        );
    }
});
