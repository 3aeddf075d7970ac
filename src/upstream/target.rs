//! Where a route's calls go, and the upstream URI for a request's remainder.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// Where a route's calls go: scheme and authority, and the base path the remainder is appended to.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Without a trailing `/`; empty for the root.
    pub base_path: String,
}

impl Target {
    pub fn from_uri(uri: &Uri) -> Option<Target> {
        Some(Target {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The upstream URI for a request whose path, after the route's prefix, is `remainder`.
    /// The remainder and query are passed byte for byte, percent-escapes included.
    pub fn uri(&self, remainder: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(
            self.base_path.len() + remainder.len() + query.map_or(0, |q| q.len() + 1) + 1,
        );
        pq.push_str(&self.base_path);
        pq.push_str(remainder);
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(pq)?)
            .build()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}/", self.scheme, self.authority, self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uris_keep_remainder_and_query_byte_for_byte() {
        let t = Target::from_uri(&"https://api.nav.no/forsikring/".parse().unwrap()).unwrap();
        let cases = [
            ("/a/b", Some("x=1"), "https://api.nav.no/forsikring/a/b?x=1"),
            ("", None, "https://api.nav.no/forsikring"),
            ("/", None, "https://api.nav.no/forsikring/"),
            (
                "/%C3%A6%20x",
                Some("q=%2F&y"),
                "https://api.nav.no/forsikring/%C3%A6%20x?q=%2F&y",
            ),
        ];
        for (rest, query, want) in cases {
            assert_eq!(t.uri(rest, query).unwrap().to_string(), want);
        }
        let root = Target::from_uri(&"http://127.0.0.1:8/".parse().unwrap()).unwrap();
        assert_eq!(
            root.uri("", None).unwrap().to_string(),
            "http://127.0.0.1:8/"
        );
    }
}
