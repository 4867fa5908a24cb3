//! PromQL tenancy: confines a query to one namespace by rewriting its selectors, as prom-label-proxy does.
//!
//! ```text
//!   PromQL text ──promql-parser──► AST ──every vector/matrix selector (subqueries, calls, aggregations,
//!                                        binary operands included) gets namespace="NS"──► PromQL text
//! ```
//!
//! A selector that already has exactly `namespace="NS"` keeps it; any other matcher on `namespace`
//! (`namespace="other"`, `namespace=~".*"`, `namespace!="NS"`, ...) is rejected rather than silently replaced,
//! so a policy that asks for another namespace's data is told so on its status. With `or` matcher groups
//! (`{a="1" or b="2"}`) every group is confined. `info()` is rejected: it reads `target_info` series that no
//! selector in the text names. `label_replace` and `label_join` may write a `namespace` label on their result,
//! but only on series every selector already confined to NS, so they cannot read another namespace's data; they
//! are allowed (see docs/security.md).

use promql_parser::{
    label::{MatchOp, Matcher, Matchers},
    parser::{self, Expr, VectorSelector},
};

/// The label every selector is confined by.
pub const NAMESPACE_LABEL: &str = "namespace";

/// Whether and how raw PromQL is confined (`--promql-tenancy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Tenancy {
    /// Queries are sent as written.
    #[default]
    Off,
    /// Every selector of every query is confined to the policy's namespace.
    Namespace,
}

/// Why a query could not be confined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TenancyError {
    #[error("PromQL tenancy: the query does not parse: {0}")]
    Parse(String),
    #[error(
        "PromQL tenancy: the selector {selector} reads namespace {matcher}, but this policy may read only namespace=\"{namespace}\""
    )]
    ForeignNamespace { selector: String, matcher: String, namespace: String },
    #[error("PromQL tenancy: {function}() reads series no selector names and cannot be confined to a namespace")]
    Unconfinable { function: String },
}

/// `query` with every selector confined to `namespace`.
pub fn confine(query: &str, namespace: &str) -> Result<String, TenancyError> {
    let mut expr = parser::parse(query).map_err(TenancyError::Parse)?;
    walk(&mut expr, namespace)?;
    Ok(expr.to_string())
}

fn walk(expr: &mut Expr, namespace: &str) -> Result<(), TenancyError> {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, namespace),
        Expr::MatrixSelector(ms) => selector(&mut ms.vs, namespace),
        Expr::Aggregate(a) => {
            if let Some(param) = a.param.as_mut() {
                walk(param, namespace)?;
            }
            walk(&mut a.expr, namespace)
        }
        Expr::Unary(u) => walk(&mut u.expr, namespace),
        Expr::Binary(b) => {
            walk(&mut b.lhs, namespace)?;
            walk(&mut b.rhs, namespace)
        }
        Expr::Paren(p) => walk(&mut p.expr, namespace),
        Expr::Subquery(s) => walk(&mut s.expr, namespace),
        Expr::Call(call) => {
            if call.func.name == "info" {
                return Err(TenancyError::Unconfinable { function: call.func.name.into() });
            }
            call.args.args.iter_mut().try_for_each(|arg| walk(arg, namespace))
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err(TenancyError::Unconfinable { function: "an extension expression".into() }),
    }
}

fn selector(vs: &mut VectorSelector, namespace: &str) -> Result<(), TenancyError> {
    let shown = vs.to_string();
    let Matchers { matchers, or_matchers } = &mut vs.matchers;
    if or_matchers.is_empty() {
        group(matchers, namespace, &shown)
    } else {
        or_matchers.iter_mut().try_for_each(|g| group(g, namespace, &shown))
    }
}

fn group(matchers: &mut Vec<Matcher>, namespace: &str, shown: &str) -> Result<(), TenancyError> {
    let mut confined = false;
    for m in matchers.iter().filter(|m| m.name == NAMESPACE_LABEL) {
        if m.op == MatchOp::Equal && m.value == namespace {
            confined = true;
        } else {
            return Err(TenancyError::ForeignNamespace {
                selector: shown.to_string(),
                matcher: m.to_string(),
                namespace: namespace.to_string(),
            });
        }
    }
    if !confined {
        matchers.push(Matcher::new(MatchOp::Equal, NAMESPACE_LABEL, namespace));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(query: &str) -> String {
        let confined = confine(query, "shop").unwrap_or_else(|e| panic!("{query}: {e}"));
        // (promql-parser prints the matchers of a selector sorted by name.)
        // What is sent parses again, and confining it again changes nothing.
        assert_eq!(confine(&confined, "shop").as_deref(), Ok(confined.as_str()), "{query} round-trips");
        confined
    }

    fn rejected(query: &str) -> TenancyError {
        confine(query, "shop").expect_err(query)
    }

    #[test]
    fn plain_selectors_get_the_namespace() {
        assert_eq!(ok("up"), r#"up{namespace="shop"}"#);
        assert_eq!(ok(r#"queue_depth{queue="orders"}"#), r#"queue_depth{namespace="shop",queue="orders"}"#);
        assert_eq!(ok(r#"{__name__=~"http_.*"}"#), r#"{__name__=~"http_.*",namespace="shop"}"#);
        assert_eq!(ok(r#"up{namespace="shop"}"#), r#"up{namespace="shop"}"#, "an existing match is kept once");
    }

    #[test]
    fn every_selector_of_a_compound_query_is_confined() {
        assert_eq!(
            ok("sum by (pod) (rate(http_requests_total[5m])) / on(pod) group_left kube_pod_info"),
            r#"sum by (pod) (rate(http_requests_total{namespace="shop"}[5m])) / on (pod) group_left () kube_pod_info{namespace="shop"}"#
        );
        assert_eq!(ok("a - ignoring(code) b"), r#"a{namespace="shop"} - ignoring (code) b{namespace="shop"}"#);
        assert_eq!(
            ok("max_over_time(rate(x[1m])[10m:30s])"),
            r#"max_over_time(rate(x{namespace="shop"}[1m])[10m:30s])"#
        );
        assert_eq!(ok("topk(3, x)"), r#"topk(3, x{namespace="shop"})"#);
        assert_eq!(ok("count_values(\"v\", x)"), r#"count_values("v", x{namespace="shop"})"#);
        assert_eq!(
            ok("histogram_quantile(0.99, sum by (le) (rate(h_bucket[2m])))"),
            r#"histogram_quantile(0.99, sum by (le) (rate(h_bucket{namespace="shop"}[2m])))"#
        );
        assert_eq!(ok("-(x)"), r#"-(x{namespace="shop"})"#);
        assert_eq!(ok("scalar(x) * 2 + time()"), r#"scalar(x{namespace="shop"}) * 2 + time()"#);
    }

    #[test]
    fn offset_and_at_modifiers_are_kept() {
        assert_eq!(ok("x offset 5m"), r#"x{namespace="shop"} offset 5m"#);
        assert_eq!(ok("rate(x[5m] offset 1h)"), r#"rate(x{namespace="shop"}[5m] offset 1h)"#);
        assert_eq!(ok("x @ 1700000000"), r#"x{namespace="shop"} @ 1700000000.000"#);
        assert_eq!(ok("rate(x[5m:1m] @ end())"), r#"rate(x{namespace="shop"}[5m:1m] @ end())"#);
    }

    #[test]
    fn label_replace_confines_its_input_and_may_only_relabel_it() {
        assert_eq!(
            ok(r#"label_replace(x, "namespace", "other", "", "")"#),
            r#"label_replace(x{namespace="shop"}, "namespace", "other", "", "")"#
        );
        assert_eq!(
            ok(r#"label_join(x, "namespace", ",", "a")"#),
            r#"label_join(x{namespace="shop"}, "namespace", ",", "a")"#
        );
    }

    #[test]
    fn another_namespace_is_rejected_not_replaced() {
        for query in [
            r#"up{namespace="other"}"#,
            r#"up{namespace=~".*"}"#,
            r#"up{namespace!="shop"}"#,
            r#"up{namespace!~"kube-.*"}"#,
            r#"up{namespace="shop",namespace=~"sho.*"}"#,
            r#"sum(rate(x[5m])) / sum(rate(y{namespace="payments"}[5m]))"#,
            r#"max_over_time(x{namespace=~"s.*"}[10m:1m])"#,
        ] {
            let error = rejected(query);
            assert!(matches!(error, TenancyError::ForeignNamespace { .. }), "{query}: {error}");
            assert!(error.to_string().contains(r#"may read only namespace="shop""#), "{error}");
        }
    }

    #[test]
    fn every_or_group_is_confined() {
        assert_eq!(ok(r#"x{a="1" or b="2"}"#), r#"x{a="1", namespace="shop" or b="2", namespace="shop"}"#);
        assert!(matches!(rejected(r#"x{a="1" or namespace="other"}"#), TenancyError::ForeignNamespace { .. }));
    }

    #[test]
    fn unparsable_and_unconfinable_queries_are_errors() {
        assert!(matches!(rejected("sum(rate(x[5m])"), TenancyError::Parse(_)));
        assert!(rejected("sum(rate(x[5m])").to_string().starts_with("PromQL tenancy: the query does not parse"));
        assert!(matches!(rejected("info(up)"), TenancyError::Unconfinable { .. }));
    }

    #[test]
    fn values_with_quotes_stay_inside_their_matcher() {
        assert_eq!(ok(r#"x{path="/a\"b"}"#), r#"x{namespace="shop",path="/a\"b"}"#);
    }
}
