//! `labelSelector` and `fieldSelector` query strings, parsed and matched the way kube-apiserver does: equality
//! (`=`, `==`, `!=`), sets (`in`, `notin`), existence (`key`, `!key`) for labels; (in)equality on a fixed set of
//! selectable fields for fields. Also renders a `LabelSelector` object as the string a `Scale` carries.

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a selector string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// The label selector does not parse.
    #[error("unable to parse requirement: {0}")]
    ParseLabel(String),
    /// The field selector does not parse.
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    ParseField(String, String),
    /// The field is not selectable on this kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<(String, Op)>,
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for ch in s.chars() {
        match ch {
            '(' => {
                depth += 1;
                current.push(ch);
            }
            ')' => {
                depth -= 1;
                current.push(ch);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::ParseLabel(whole.to_string()))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl LabelSelector {
    /// Parses `app=web,tier in (a,b),!legacy`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(s) {
            let bad = || SelectorError::ParseLabel(part.clone());
            let req = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_string(), Op::DoesNotExist)
            } else if let Some((key, value)) = part.split_once("!=") {
                (key.trim().to_string(), Op::NotEq(value.trim().to_string()))
            } else if let Some((key, value)) = part.split_once("==") {
                (key.trim().to_string(), Op::Eq(value.trim().to_string()))
            } else if let Some((key, value)) = part.split_once('=') {
                (key.trim().to_string(), Op::Eq(value.trim().to_string()))
            } else if let Some(idx) = part.find(" notin ") {
                (part[..idx].trim().to_string(), Op::NotIn(parse_set(&part[idx + 7..], &part)?))
            } else if let Some(idx) = part.find(" in ") {
                (part[..idx].trim().to_string(), Op::In(parse_set(&part[idx + 4..], &part)?))
            } else if let Some((key, value)) = part.split_once('>') {
                (key.trim().to_string(), Op::Gt(value.trim().parse().map_err(|_| bad())?))
            } else if let Some((key, value)) = part.split_once('<') {
                (key.trim().to_string(), Op::Lt(value.trim().parse().map_err(|_| bad())?))
            } else {
                (part.trim().to_string(), Op::Exists)
            };
            if !valid_key(&req.0) {
                return Err(bad());
            }
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::Eq(v) => value == Some(v),
                Op::NotEq(v) => value != Some(v),
                Op::In(set) => value.is_some_and(|x| set.contains(x)),
                Op::NotIn(set) => value.is_none_or(|x| !set.contains(x)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::Gt(n) => value.and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
                Op::Lt(n) => value.and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
            }
        })
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Labels of a JSON object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (JSON pointer into the object, wanted value, equal?)
    requirements: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses `metadata.name=web,status.phase!=Running`; `selectable` maps extra field labels to JSON paths.
    pub fn parse(s: &str, selectable: &[(String, String)]) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError::ParseField(s.to_string(), part.to_string()));
            };
            let field = field.trim();
            let path = match field {
                "metadata.name" | "metadata.namespace" => field.to_string(),
                _ => selectable
                    .iter()
                    .find(|(label, _)| label == field)
                    .map(|(_, path)| path.clone())
                    .ok_or_else(|| SelectorError::UnsupportedField(field.to_string()))?,
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            requirements.push((pointer, value.trim().to_string(), equal));
        }
        Ok(Self { requirements })
    }

    /// Whether the object satisfies every requirement; a missing field reads as the empty string.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(pointer, wanted, equal)| {
            let actual = match obj.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *wanted) == *equal
        })
    }
}

/// Renders a `LabelSelector` object (`matchLabels`, `matchExpressions`) as its string form, sorted by key,
/// the way `metav1.LabelSelectorAsSelector(...).String()` does.
pub fn label_selector_string(selector: &Value) -> String {
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let rendered = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            parts.push((key.to_string(), rendered));
        }
    }
    parts.sort();
    parts.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_operators_match_like_the_apiserver() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("app=web", &[("app", "web")], true),
            ("app==web", &[("app", "db")], false),
            ("app!=web", &[], true),
            ("app!=web", &[("app", "web")], false),
            ("tier in (a, b)", &[("tier", "b")], true),
            ("tier in (a,b)", &[], false),
            ("tier notin (a,b)", &[], true),
            ("tier notin (a,b)", &[("tier", "a")], false),
            ("app", &[("app", "x")], true),
            ("!app", &[("app", "x")], false),
            ("app=web,tier in (a,b),!legacy", &[("app", "web"), ("tier", "a")], true),
            ("app=web,tier in (a,b),!legacy", &[("app", "web"), ("tier", "a"), ("legacy", "")], false),
            ("", &[("x", "y")], true),
        ];
        for (sel, l, want) in cases {
            let parsed = LabelSelector::parse(sel).expect(sel);
            assert_eq!(parsed.matches(&labels(l)), *want, "{sel} on {l:?}");
        }
    }

    #[test]
    fn bad_label_selector_is_rejected() {
        assert!(LabelSelector::parse("tier in a,b").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selector_supports_metadata_and_declared_fields_only() {
        let obj = json!({"metadata": {"name": "web", "namespace": "prod"}, "status": {"phase": "Running"}});
        let extra = vec![("status.phase".to_string(), "status.phase".to_string())];
        assert!(FieldSelector::parse("metadata.name=web,metadata.namespace==prod", &[]).expect("ok").matches(&obj));
        assert!(!FieldSelector::parse("status.phase!=Running", &extra).expect("ok").matches(&obj));
        assert_eq!(FieldSelector::parse("spec.foo=x", &extra), Err(SelectorError::UnsupportedField("spec.foo".into())));
    }

    #[test]
    fn selector_object_renders_sorted() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}]});
        assert_eq!(label_selector_string(&sel), "a=1,b=2,c in (x,y)");
    }
}
