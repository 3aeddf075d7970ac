//! Reads a parsed YAML tree field by field, collecting every problem with its YAML path instead of
//! stopping at the first, and expanding `${NAME}` from the environment in every string.

use serde_json::{Map, Value};
use std::fmt;

/// One problem in the configuration, located by its YAML path (`routes[1].client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Where environment variables come from; a closure so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub struct Reader<'a> {
    env: EnvLookup<'a>,
    pub issues: Vec<Issue>,
}

/// A child path: `join("routes[0]", "client")` is `routes[0].client`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

impl<'a> Reader<'a> {
    pub fn new(env: EnvLookup<'a>) -> Self {
        Reader {
            env,
            issues: Vec::new(),
        }
    }

    pub fn issue(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A mapping whose keys must all be in `allowed`; an unknown key is reported with the nearest
    /// known one, because a typo such as `scpoe:` must not silently drop a setting.
    pub fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.issue(path, format!("expected a mapping, found {}", kind(value)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = match nearest(key, allowed) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => format!(" (known keys: {})", allowed.join(", ")),
                };
                self.issue(&join(path, key), format!("unknown key{hint}"));
            }
        }
        Some(map)
    }

    /// A string (numbers are taken as their text, so `consumer_org: 910753614` works unquoted),
    /// with `${NAME}` expanded. `None` when absent or wrong; wrong is reported.
    pub fn string(&mut self, value: Option<&Value>, path: &str) -> Option<String> {
        match value? {
            Value::String(s) => self.expand(s, path),
            Value::Number(n) => Some(n.to_string()),
            Value::Null => None,
            other => {
                self.issue(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub fn required_string(&mut self, value: Option<&Value>, path: &str) -> Option<String> {
        if value.is_none_or(Value::is_null) {
            self.issue(path, "is required");
            return None;
        }
        let s = self.string(value, path)?;
        if s.trim().is_empty() {
            self.issue(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn positive_u64(&mut self, value: Option<&Value>, path: &str) -> Option<u64> {
        match value? {
            Value::Number(n) => match n.as_u64().filter(|v| *v > 0) {
                Some(v) => Some(v),
                None => {
                    self.issue(path, format!("expected a positive whole number, found {n}"));
                    None
                }
            },
            Value::Null => None,
            other => {
                self.issue(
                    path,
                    format!("expected a positive whole number, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A whole number, zero allowed (`shutdown_grace_seconds: 0` stops at once).
    pub fn u64_or_zero(&mut self, value: Option<&Value>, path: &str) -> Option<u64> {
        match value? {
            Value::Number(n) if n.as_u64() == Some(0) => Some(0),
            v => self.positive_u64(Some(v), path),
        }
    }

    /// `true` or `false` (YAML 1.2: `yes`/`no` are strings and refused here).
    pub fn boolean(&mut self, value: Option<&Value>, path: &str) -> Option<bool> {
        match value? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            other => {
                self.issue(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    pub fn string_list(&mut self, value: Option<&Value>, path: &str) -> Option<Vec<String>> {
        match value? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(s) = self.required_string(Some(item), &index(path, i)) {
                        out.push(s);
                    }
                }
                Some(out)
            }
            Value::Null => None,
            single => self.string(Some(single), path).map(|s| vec![s]),
        }
    }

    /// Expands every string inside an arbitrary JSON-like value (for `authorization_details`).
    pub fn expand_tree(&mut self, value: &Value, path: &str) -> Value {
        match value {
            Value::String(s) => Value::String(self.expand(s, path).unwrap_or_default()),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.expand_tree(v, &index(path, i)))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.expand_tree(v, &join(path, k))))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `${NAME}` is replaced from the environment, `$$` is a literal `$`. An unset variable is an
    /// issue naming the variable and the path where it is used, never the surrounding value.
    pub fn expand(&mut self, raw: &str, path: &str) -> Option<String> {
        if !raw.contains('$') {
            return Some(raw.to_string());
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    self.issue(path, "unclosed `${` (write `$$` for a literal `$`)");
                    return None;
                };
                let name = &body[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.issue(
                        path,
                        format!("`${{{name}}}` is not a valid environment variable name"),
                    );
                    ok = false;
                } else if let Some(value) = (self.env)(name) {
                    out.push_str(&value);
                } else {
                    self.issue(
                        path,
                        format!("environment variable {name} is not set (used as ${{{name}}})"),
                    );
                    ok = false;
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The allowed key closest to a typo, if it is close enough to be a likely typo.
fn nearest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: like Levenshtein, with a swap of neighbours (`scpoe`) as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_string())
    }

    #[test]
    fn expands_variables_and_reports_unset_ones_by_name() {
        let mut r = Reader::new(&env);
        assert_eq!(r.expand("a${SET}b$$c", "p").as_deref(), Some("avalueb$c"));
        assert_eq!(r.expand("${MISSING}", "x.y"), None);
        assert_eq!(
            r.issues[0].to_string(),
            "x.y: environment variable MISSING is not set (used as ${MISSING})"
        );
    }

    #[test]
    fn suggests_the_nearest_key_for_a_typo() {
        assert_eq!(
            nearest("scpoe", &["scopes", "client", "name"]),
            Some("scopes")
        );
        assert_eq!(nearest("zzzzzzzz", &["scopes", "client"]), None);
    }
}
