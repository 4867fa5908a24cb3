//! The fake's own `/metrics`: `apiserver_request_total{verb, group, version, resource, subresource, code}`, as
//! kube-apiserver counts its requests, so that a benchmark can read the API load a controller causes from the
//! server's side (how many `/scale` reads, status writes, Events) the way an operator would read it from a real
//! cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::Method;

/// One counter's labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestLabels {
    /// kube-apiserver's verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural, empty for non-resource paths (discovery, `/openapi`, `/healthz`).
    pub resource: String,
    /// Subresource (`status`, `scale`), empty for the resource itself.
    pub subresource: String,
    /// HTTP status of the answer.
    pub code: u16,
}

impl RequestLabels {
    /// The labels of a request to `path` (without the query), as kube-apiserver's request info would parse it.
    pub fn of(method: &Method, path: &str, watch: bool, code: u16) -> Self {
        let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => ("", "", &[][..]),
        };
        // After the version: [namespaces/<ns>/]<plural>[/<name>[/<sub>]]; `namespaces/<name>[/<sub>]` is itself a
        // resource (its subresources are `status` and `finalize`).
        let resource_path: &[&str] = match rest {
            ["namespaces", _ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") || !tail.is_empty() => {
                &rest[2..]
            }
            _ => rest,
        };
        let (resource, named, subresource) = match resource_path {
            [] => ("", false, ""),
            [plural] => (*plural, false, ""),
            [plural, _name] => (*plural, true, ""),
            [plural, _name, sub, ..] => (*plural, true, *sub),
        };
        let verb = match (method.as_str(), named) {
            ("GET", true) => "get",
            ("GET", false) if resource.is_empty() => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "other",
        };
        Self {
            verb,
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            code,
        }
    }
}

/// Counts of every request since the start.
#[derive(Debug, Default)]
pub struct RequestCounts(BTreeMap<RequestLabels, u64>);

impl RequestCounts {
    /// Counts one request.
    pub fn add(&mut self, labels: RequestLabels) {
        *self.0.entry(labels).or_default() += 1;
    }

    /// How many requests had these verb, resource and subresource (any group, version and code).
    pub fn count(&self, verb: &str, resource: &str, subresource: &str) -> u64 {
        self.0
            .iter()
            .filter(|(l, _)| l.verb == verb && l.resource == resource && l.subresource == subresource)
            .map(|(_, n)| n)
            .sum()
    }

    /// The Prometheus text exposition of the counters.
    pub fn exposition(&self) -> String {
        let mut out = String::from(
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, \
             version, resource, subresource and HTTP response code.\n# TYPE apiserver_request_total counter\n",
        );
        for (l, n) in &self.0 {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{}\",group=\"{}\",version=\"{}\",resource=\"{}\",\
                 subresource=\"{}\",code=\"{}\"}} {n}",
                l.verb,
                escape(&l.group),
                escape(&l.version),
                escape(&l.resource),
                escape(&l.subresource),
                l.code
            );
        }
        out
    }
}

/// A label value as the text format wants it (paths are client input: quotes and backslashes are escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, path: &str, watch: bool) -> (&'static str, String, String) {
        let l = RequestLabels::of(&method, path, watch, 200);
        (l.verb, l.resource, l.subresource)
    }

    #[test]
    fn paths_are_labelled_as_kube_apiserver_labels_them() {
        let s = |v: &'static str, r: &str, sub: &str| (v, r.to_string(), sub.to_string());
        let p = "/apis/autoscaling.foresight.dev/v1alpha1/namespaces/shop/scalingpolicies";
        assert_eq!(labels(Method::GET, p, false), s("list", "scalingpolicies", ""));
        assert_eq!(labels(Method::GET, p, true), s("watch", "scalingpolicies", ""));
        assert_eq!(labels(Method::PATCH, &format!("{p}/web/status"), false), s("patch", "scalingpolicies", "status"));
        assert_eq!(
            labels(Method::GET, "/apis/apps/v1/namespaces/shop/deployments/web/scale", false),
            s("get", "deployments", "scale")
        );
        assert_eq!(
            labels(Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", false),
            s("create", "events", "")
        );
        assert_eq!(labels(Method::GET, "/api/v1/namespaces/shop", false), s("get", "namespaces", ""));
        assert_eq!(
            labels(Method::PUT, "/api/v1/namespaces/shop/finalize", false),
            s("update", "namespaces", "finalize")
        );
        assert_eq!(labels(Method::GET, "/api/v1/namespaces/shop/pods", false), s("list", "pods", ""));
        assert_eq!(labels(Method::DELETE, "/api/v1/namespaces/shop/pods", false), s("deletecollection", "pods", ""));
        assert_eq!(labels(Method::GET, "/apis/apps/v1/deployments", false), s("list", "deployments", ""));
        assert_eq!(labels(Method::GET, "/openapi/v3", false), s("get", "", ""));
    }

    #[test]
    fn the_exposition_counts_each_label_set() {
        let mut counts = RequestCounts::default();
        for _ in 0..3 {
            counts.add(RequestLabels::of(&Method::GET, "/apis/apps/v1/namespaces/a/deployments/web/scale", false, 200));
        }
        counts.add(RequestLabels::of(&Method::GET, "/apis/apps/v1/namespaces/a/deployments/x/scale", false, 404));
        assert_eq!(counts.count("get", "deployments", "scale"), 4);
        let text = counts.exposition();
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"get\",group=\"apps\",version=\"v1\",resource=\"deployments\",\
                 subresource=\"scale\",code=\"200\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("code=\"404\"} 1"), "{text}");
    }
}
