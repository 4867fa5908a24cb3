//! Field ownership for server-side apply: which field manager set which field, so an apply that would change a
//! field another manager owns fails with 409 Conflict unless forced. kube-lease-manager's leader election relies
//! on exactly this (two candidates applying `holderIdentity`: the second one must conflict).
//!
//! Simplification: a field is a leaf of the JSON object tree; lists are atomic leaves (the real server tracks
//! keyed list elements individually). Ownership is kept beside the object, not in `metadata.managedFields`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::patch::{clean, strategic_merge};

/// A field as the path of object keys from the root.
pub type FieldPath = Vec<String>;

/// A field manager: its name and whether it owns fields through apply or through ordinary updates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Manager {
    /// `fieldManager` of the request.
    pub name: String,
    /// Apply (true) or Update (false): the real server keeps these as separate managers.
    pub apply: bool,
}

/// Who owns which fields of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldOwners {
    owned: BTreeMap<Manager, BTreeSet<FieldPath>>,
}

const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The tracked leaf fields of an object.
pub fn leaves(obj: &Value) -> Vec<FieldPath> {
    let mut out = Vec::new();
    if let Value::Object(map) = obj {
        for (key, value) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    if let Value::Object(meta) = value {
                        for (mk, mv) in meta.iter().filter(|(k, _)| !UNTRACKED_METADATA.contains(&k.as_str())) {
                            collect(mv, vec!["metadata".into(), mk.clone()], &mut out);
                        }
                    }
                }
                _ => collect(value, vec![key.clone()], &mut out),
            }
        }
    }
    out
}

fn collect(v: &Value, path: FieldPath, out: &mut Vec<FieldPath>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let mut p = path.clone();
                p.push(k.clone());
                collect(child, p, out);
            }
        }
        _ => out.push(path),
    }
}

/// The value at a field path.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for key in parents {
        match cur.get_mut(key) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(map) = cur {
        map.remove(last);
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `.spec.holderIdentity`, as conflict messages print a field.
pub fn display(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

impl FieldOwners {
    /// Records an ordinary write (create, update, patch) by `manager`: it takes over every field it changed.
    pub fn record_update(&mut self, manager: &str, old: Option<&Value>, new: &Value) {
        let me = Manager { name: manager.to_string(), apply: false };
        let changed: Vec<FieldPath> =
            leaves(new).into_iter().filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p)).collect();
        for p in &changed {
            self.take_from_others(&me, p);
        }
        self.owned.entry(me).or_default().extend(changed);
        self.prune(new);
    }

    fn take_from_others(&mut self, me: &Manager, path: &[String]) {
        for (m, set) in self.owned.iter_mut() {
            if m != me {
                set.retain(|q| !overlaps(q, path));
            }
        }
    }

    /// Server-side apply of `config` by `manager` onto `live` (None when creating). Returns the merged object, or
    /// the conflicts as (other manager, field) when not forced.
    pub fn apply(
        &mut self,
        manager: &str,
        force: bool,
        live: Option<&Value>,
        config: &Value,
    ) -> Result<Value, Vec<(String, String)>> {
        let me = Manager { name: manager.to_string(), apply: true };
        let config = clean(config);
        let mut merged = live.cloned().unwrap_or_else(|| Value::Object(Default::default()));
        strategic_merge(&mut merged, &config);
        let config_fields = leaves(&config);

        let mut conflicts = Vec::new();
        let mut changed = Vec::new();
        for p in &config_fields {
            let before = live.and_then(|l| get_path(l, p));
            if before.is_none() || before == get_path(&merged, p) {
                continue;
            }
            changed.push(p.clone());
            for (m, set) in &self.owned {
                if *m != me && set.iter().any(|q| overlaps(q, p)) {
                    conflicts.push((m.name.clone(), display(p)));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            conflicts.sort();
            conflicts.dedup();
            return Err(conflicts);
        }
        for p in &changed {
            self.take_from_others(&me, p);
        }
        // Fields this manager applied before but no longer does are removed, unless someone else owns them too.
        let previous = self.owned.get(&me).cloned().unwrap_or_default();
        for old in previous.iter().filter(|o| !config_fields.iter().any(|c| overlaps(c, o))) {
            let shared = self.owned.iter().any(|(m, set)| *m != me && set.iter().any(|q| overlaps(q, old)));
            if !shared {
                remove_path(&mut merged, old);
            }
        }
        self.owned.insert(me, config_fields.into_iter().collect());
        self.prune(&merged);
        Ok(merged)
    }

    /// Forgets fields that no longer exist in `obj`, and managers left with none.
    pub fn prune(&mut self, obj: &Value) {
        for set in self.owned.values_mut() {
            set.retain(|p| get_path(obj, p).is_some());
        }
        self.owned.retain(|_, set| !set.is_empty());
    }

    /// Managers and the fields they own, for tests and debugging.
    pub fn managers(&self) -> Vec<(String, bool, Vec<String>)> {
        self.owned.iter().map(|(m, set)| (m.name.clone(), m.apply, set.iter().map(|p| display(p)).collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn second_applier_conflicts_on_a_field_with_a_different_value() {
        let mut owners = FieldOwners::default();
        let live = owners
            .apply("a", false, Some(&json!({"metadata": {"name": "l"}})), &json!({"spec": {"holderIdentity": "a"}}))
            .expect("first apply");
        let err =
            owners.apply("b", false, Some(&live), &json!({"spec": {"holderIdentity": "b"}})).expect_err("conflict");
        assert_eq!(err, vec![("a".to_string(), ".spec.holderIdentity".to_string())]);
        // Same value is shared ownership, not a conflict; force takes the field over.
        assert!(owners.apply("c", false, Some(&live), &json!({"spec": {"holderIdentity": "a"}})).is_ok());
        let forced = owners.apply("b", true, Some(&live), &json!({"spec": {"holderIdentity": "b"}})).expect("forced");
        assert_eq!(forced["spec"]["holderIdentity"], "b");
    }

    #[test]
    fn fields_dropped_from_an_apply_are_removed_unless_shared() {
        let mut owners = FieldOwners::default();
        let live = owners.apply("a", false, None, &json!({"spec": {"x": 1, "y": 2}})).expect("apply");
        let live = owners.apply("a", false, Some(&live), &json!({"spec": {"x": 1}})).expect("apply");
        assert_eq!(live, json!({"spec": {"x": 1}}));
    }

    #[test]
    fn an_update_takes_over_fields_it_changes() {
        let mut owners = FieldOwners::default();
        let live = owners.apply("a", false, None, &json!({"spec": {"x": 1}})).expect("apply");
        let updated = json!({"spec": {"x": 2}});
        owners.record_update("kubectl", Some(&live), &updated);
        // "a" no longer owns spec.x, so re-applying its old value conflicts with kubectl's update.
        let err = owners.apply("a", false, Some(&updated), &json!({"spec": {"x": 1}})).expect_err("conflict");
        assert_eq!(err[0].0, "kubectl");
    }
}
