//! Path normalisation: any remainder portvakt lets through must stay under the route's base path
//! however the upstream decodes and normalises it (percent-decoding once or twice, `\` as `/`,
//! `;params` dropped, dot segments resolved).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portvakt::route::{escapes_prefix, Target};

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

/// How a lenient upstream might see the path: decoded, backslashes as slashes, params dropped.
fn resolve(path: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    for seg in path.replace('\\', "/").split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return vec!["<escaped>".into()];
                }
            }
            s => stack.push(s.to_string()),
        }
    }
    stack
}

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else { return };
    let remainder = format!("/{rest}");
    if escapes_prefix(&remainder) {
        return;
    }
    let base = Target::from_uri(&"https://api.example/base/".parse().unwrap()).unwrap();
    let Ok(uri) = base.uri(&remainder, None) else { return };
    let path = uri.path();
    assert!(path.starts_with("/base"), "{path}");
    for decoded in [decode(path), decode(&decode(path))] {
        let segments = resolve(&decoded);
        assert!(
            segments.first().map(String::as_str) == Some("base"),
            "{remainder:?} leaves /base once decoded: {decoded:?}"
        );
    }
});
