//! Reading a ScalingPolicy file as strictly as `kubectl apply` would: a typo is an error, not a silently ignored
//! field.
//!
//! The API server prunes (or, with field validation, rejects) fields the CRD schema does not know; serde just
//! ignores them, so `scaleUpAbvoe: 70` would backtest a policy without its bound. Here every field is checked
//! against the very schema the CRD ships ([`ScalingPolicy::crd`]), and the error names the field's path, its line
//! and the nearest valid name.

use kube::{CustomResourceExt, Resource};
use serde_json::Value;

use crate::api::{ScalingPolicy, convert::InvalidPolicy};

/// The apiVersion a policy file must have.
pub fn api_version() -> String {
    ScalingPolicy::api_version(&()).into_owned()
}

/// Why a policy file is not the ScalingPolicy it should be, in words that name the field.
pub fn check(value: &Value, text: &str) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err(format!("expected a ScalingPolicy (a YAML mapping), found {}", excerpt(text)));
    };
    let kind = map.get("kind").and_then(Value::as_str);
    if kind != Some("ScalingPolicy") {
        return Err(match kind {
            Some(k) => at(text, &["kind"], format!("expected kind ScalingPolicy, found {k}")),
            None => "expected kind ScalingPolicy, found no kind".into(),
        });
    }
    let want = api_version();
    let version = map.get("apiVersion").and_then(Value::as_str);
    if version != Some(want.as_str()) {
        return Err(match version {
            Some(v) => at(text, &["apiVersion"], format!("expected apiVersion {want}, found {v}")),
            None => format!("expected apiVersion {want}, found no apiVersion"),
        });
    }
    let crd = serde_json::to_value(ScalingPolicy::crd()).map_err(|e| e.to_string())?;
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    // The API server's own fields of every object; the CRD schema leaves them out.
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, ty) in [("apiVersion", "string"), ("kind", "string"), ("metadata", "object")] {
            props.entry(name).or_insert_with(|| serde_json::json!({ "type": ty }));
        }
    }
    let mut unknown = Vec::new();
    walk(value, &schema, &mut Vec::new(), &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = unknown
        .into_iter()
        .map(|u| {
            let keys: Vec<&str> = u.path.iter().filter_map(Segment::key).collect();
            let hint = u.nearest.map(|n| format!(" (did you mean {n}?)")).unwrap_or_default();
            at(text, &keys, format!("unknown field {}{hint}", display_path(&u.path)))
        })
        .collect();
    Err(lines.join("\n"))
}

/// The field an engine-level check is about, for its line number.
pub fn field_of(e: &InvalidPolicy) -> Option<Vec<String>> {
    let field = match e {
        InvalidPolicy::TooSmall { field, .. } | InvalidPolicy::NotPositive { field, .. } => field.as_str(),
        InvalidPolicy::MinAboveMax { .. } => "minReplicas",
        InvalidPolicy::IntervalTooShort => "interval",
        _ => return None,
    };
    Some(std::iter::once("spec").chain(field.split('.')).map(str::to_string).collect())
}

/// `message`, prefixed with the line of the field at `keys` when it can be found.
pub fn at(text: &str, keys: &[&str], message: String) -> String {
    match line_of(text, keys) {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    fn key(&self) -> Option<&str> {
        match self {
            Segment::Key(k) => Some(k),
            Segment::Index(_) => None,
        }
    }
}

fn display_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

struct Unknown {
    path: Vec<Segment>,
    nearest: Option<String>,
}

/// Collects every field of `value` that `schema` (OpenAPI v3, structural) does not declare.
fn walk(value: &Value, schema: &Value, path: &mut Vec<Segment>, out: &mut Vec<Unknown>) {
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return; // e.g. metadata: the API server's, not this schema's, to check.
            }
            for (k, v) in map {
                path.push(Segment::Key(k.clone()));
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(v, s, path, out),
                    (None, None) => {
                        let names = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                        out.push(Unknown { path: path.clone(), nearest: nearest(k, names) });
                    }
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    walk(v, s, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// The valid name closest to a typo, when it is close enough to be what was meant.
fn nearest(typo: &str, names: Vec<&str>) -> Option<String> {
    names
        .into_iter()
        .map(|n| (strsim::jaro_winkler(&typo.to_ascii_lowercase(), &n.to_ascii_lowercase()), n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.to_string())
}

/// The 1-based line of the key at `keys` in block-style YAML (what people write), if it can be found.
/// List items are not told apart: the first item with the key wins.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    if keys.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut content = trimmed;
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2 + (rest.len() - rest.trim_start().len());
            content = rest.trim_start();
        }
        let Some((key, _)) = content.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if stack.len() == keys.len() && stack.iter().zip(keys).all(|((_, a), b)| a == b) {
            return Some(n + 1);
        }
    }
    None
}

/// The start of a file that is not a policy, on one short line.
pub fn excerpt(text: &str) -> String {
    let first: String = text.trim_start().chars().take(60).collect();
    let first = first.lines().next().unwrap_or_default();
    let more = if text.trim().len() > first.len() { "..." } else { "" };
    format!("{first:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_block_keys_in_lists_and_maps() {
        let text = "apiVersion: v\nkind: ScalingPolicy\nspec:\n  maxReplicas: 0\n  policies:\n    threshold:\n    - metric: cpu\n      scaleUpAbvoe: 70\n";
        assert_eq!(line_of(text, &["spec", "maxReplicas"]), Some(4));
        assert_eq!(line_of(text, &["spec", "policies", "threshold", "scaleUpAbvoe"]), Some(8));
        assert_eq!(line_of(text, &["spec", "minReplicas"]), None);
    }

    #[test]
    fn typos_get_the_nearest_name() {
        assert_eq!(
            nearest("scaleUpAbvoe", vec!["metric", "scaleUpAbove", "scaleDownBelow"]).as_deref(),
            Some("scaleUpAbove")
        );
        assert_eq!(nearest("minReplica", vec!["minReplicas", "maxReplicas"]).as_deref(), Some("minReplicas"));
        assert_eq!(nearest("zzz", vec!["minReplicas"]), None);
    }
}
