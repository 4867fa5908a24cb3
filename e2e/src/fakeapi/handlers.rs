//! The HTTP surface: one axum fallback handler that records the request, applies injected faults, parses the
//! Kubernetes URL layout (`/api/v1/namespaces/{ns}/{plural}/{name}/{sub}`, `/apis/{group}/{version}/...`) and
//! dispatches to discovery, [`ops`] or [`watch`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::discovery;
use super::errors::ApiError;
use super::faults::RecordedRequest;
use super::openapi;
use super::ops::{self, DeleteOpts, Sub, WriteOpts};
use super::patch::{PatchKind, decode_body};
use super::render::{self, Representation};
use super::requests::RequestLabels;
use super::resources::ApiResourceSpec;
use super::selectors::{FieldSelector, LabelSelector};
use super::watch::{self, WatchRequest};
use super::{Inner, lock};

/// The router serving everything.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

const MAX_BODY: usize = 64 * 1024 * 1024;

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading request body: {e}")).into_response();
        }
    };
    let path = parts.uri.path().to_string();
    let query_string = parts.uri.query().unwrap_or_default().to_string();
    let method = parts.method.clone();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);

    let injected = lock(&inner.faults).take(method.as_str(), &path);
    let response = match injected {
        Some(code) => ApiError::injected(code).into_response(),
        None => {
            let query: HashMap<String, String> =
                Query::try_from_uri(&parts.uri).map(|q: Query<HashMap<String, String>>| q.0).unwrap_or_default();
            let ctx = RequestCtx { method: &method, path: &path, query: &query, headers: &parts.headers, body: &body };
            match dispatch(&inner, &ctx) {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
    };
    let recorded = RecordedRequest {
        method: method.to_string(),
        path,
        query: query_string,
        content_type,
        body: if inner.config.record_requests { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
        status: response.status().as_u16(),
    };
    let labels = RequestLabels::of(&method, &recorded.path, recorded.is_watch(), recorded.status);
    lock(&inner.request_counts).add(labels);
    if inner.config.record_requests {
        lock(&inner.requests).push(recorded);
    }
    response
}

struct RequestCtx<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl RequestCtx<'_> {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.query.get(name).map(String::as_str), Some("true" | "1"))
    }

    fn write_opts(&self) -> WriteOpts {
        let explicit = self.query.get("fieldManager").filter(|m| !m.is_empty());
        let from_agent = self.header(header::USER_AGENT).split('/').next().unwrap_or_default();
        let field_manager = explicit
            .cloned()
            .unwrap_or_else(|| if from_agent.is_empty() { "unknown".to_string() } else { from_agent.to_string() });
        WriteOpts {
            field_manager,
            explicit_manager: explicit.is_some(),
            dry_run: self.query.get("dryRun").is_some_and(|v| v == "All"),
            force: self.flag("force"),
        }
    }

    /// The body as JSON (or YAML). Protobuf and CBOR bodies get 415, which client-go answers by retrying
    /// in JSON where it can (the fake speaks JSON only).
    fn json_body(&self) -> Result<Value, ApiError> {
        let content_type = self.header(header::CONTENT_TYPE);
        if content_type.contains("protobuf") || content_type.contains("cbor") {
            return Err(ApiError::unsupported_media_type(content_type, "application/json, application/yaml"));
        }
        decode_body(self.body, true).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// A parsed resource URL.
struct Target {
    spec: ApiResourceSpec,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn dispatch(inner: &Arc<Inner>, ctx: &RequestCtx<'_>) -> Result<Response, ApiError> {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let accept = ctx.header(header::ACCEPT).to_string();
    let is_get = *ctx.method == Method::GET;
    match segs.as_slice() {
        ["version"] if is_get => return Ok(json_response(StatusCode::OK, &discovery::version())),
        ["metrics"] if is_get => {
            let text = lock(&inner.request_counts).exposition();
            return Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response());
        }
        ["healthz" | "readyz" | "livez"] if is_get => {
            return Ok((StatusCode::OK, "ok").into_response());
        }
        ["api"] if is_get => {
            if discovery::wants_aggregated(&accept) {
                let store = lock(&inner.store);
                let body = discovery::aggregated(&store.registry, true).to_string();
                return Ok(([(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)], body).into_response());
            }
            return Ok(json_response(StatusCode::OK, &discovery::core_versions()));
        }
        ["apis"] if is_get => {
            let store = lock(&inner.store);
            if discovery::wants_aggregated(&accept) {
                let body = discovery::aggregated(&store.registry, false).to_string();
                return Ok(([(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)], body).into_response());
            }
            return Ok(json_response(StatusCode::OK, &discovery::group_list(&store.registry)));
        }
        ["api", version] if is_get => {
            let store = lock(&inner.store);
            let list = discovery::resource_list(&store.registry, "", version).ok_or_else(ApiError::no_such_path)?;
            return Ok(json_response(StatusCode::OK, &list));
        }
        ["apis", group] if is_get => {
            let store = lock(&inner.store);
            let g = discovery::group(&store.registry, group).ok_or_else(ApiError::no_such_path)?;
            return Ok(json_response(StatusCode::OK, &g));
        }
        ["apis", group, version] if is_get => {
            let store = lock(&inner.store);
            let list = discovery::resource_list(&store.registry, group, version).ok_or_else(ApiError::no_such_path)?;
            return Ok(json_response(StatusCode::OK, &list));
        }
        ["openapi", "v3"] if is_get => {
            let body = openapi::discovery(&lock(&inner.store).registry);
            let etag = format!("\"{}\"", openapi::hash(&body));
            return Ok(([(header::CONTENT_TYPE, "application/json"), (header::ETAG, etag.as_str())], body.to_string())
                .into_response());
        }
        ["openapi", "v3", rest @ ..] if is_get => return openapi_document(inner, ctx, &rest.join("/"), &accept),
        _ => {}
    }
    let target = parse_target(inner, &segs)?;
    let repr = render::negotiate(&accept);
    let m = ctx.method.clone();
    match (m, target.name.is_some(), target.sub.as_deref()) {
        (Method::GET, false, None) if ctx.flag("watch") => start_watch(inner, ctx, target, repr),
        (Method::GET, false, None) => list(inner, ctx, &target, repr),
        (Method::POST, false, None) => {
            let body = ctx.json_body()?;
            let mut store = lock(&inner.store);
            let ns = target.namespace.clone().unwrap_or_default();
            let created = ops::create(&mut store, &target.spec, &target.version, &ns, body, &ctx.write_opts(), None)?;
            let rv = store.current_rv();
            Ok(json_response(StatusCode::CREATED, &render::single(&target.spec, &target.version, &created, repr, rv)))
        }
        (Method::DELETE, false, None) => delete_collection(inner, ctx, &target),
        (Method::GET, true, sub) => get(inner, &target, sub, repr),
        (Method::PUT, true, sub) => put(inner, ctx, &target, sub, repr),
        (Method::PATCH, true, sub) => patch(inner, ctx, &target, sub, repr),
        (Method::DELETE, true, None) => {
            let opts = delete_opts(ctx)?;
            let mut store = lock(&inner.store);
            let name = target.name.clone().unwrap_or_default();
            let ns = target.namespace.clone().unwrap_or_default();
            let out = ops::delete(&mut store, &target.spec, &ns, &name, &opts)?;
            let out = if out.get("kind").and_then(Value::as_str) == Some("Status") {
                out
            } else {
                render::object(&target.spec, &target.version, &out)
            };
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `/openapi/v3/apis/<group>/<version>` as kube-openapi's handler serves it: JSON only, a stale `hash` redirected to
/// the current one, a current one marked immutable for a year (clients cache it until its hash changes).
fn openapi_document(inner: &Arc<Inner>, ctx: &RequestCtx<'_>, key: &str, accept: &str) -> Result<Response, ApiError> {
    let (group, version) = match key.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), version.to_string()),
        ["apis", group, version] => (group.to_string(), version.to_string()),
        _ => return Err(ApiError::no_such_path()),
    };
    let doc = openapi::document(&lock(&inner.store).registry, &group, &version).ok_or_else(ApiError::no_such_path)?;
    let json_ok = accept.is_empty()
        || accept.split(',').any(|a| {
            let media = a.split(';').next().unwrap_or_default().trim();
            matches!(media, "application/json" | "application/*" | "*/*")
        });
    if !json_ok {
        return Ok(StatusCode::NOT_ACCEPTABLE.into_response());
    }
    let hash = openapi::hash(&doc);
    let etag = format!("\"{hash}\"");
    match ctx.query.get("hash") {
        Some(asked) if *asked != hash => {
            let location = openapi::server_relative_url(key, &doc);
            Ok((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response())
        }
        Some(_) => Ok((
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::ETAG, etag.as_str()),
                (header::VARY, "Accept"),
                (header::CACHE_CONTROL, "public, immutable"),
                (header::EXPIRES, &openapi::a_year_from_now()),
            ],
            doc.to_string(),
        )
            .into_response()),
        None => Ok((
            [(header::CONTENT_TYPE, "application/json"), (header::ETAG, etag.as_str()), (header::VARY, "Accept")],
            doc.to_string(),
        )
            .into_response()),
    }
}

fn parse_target(inner: &Arc<Inner>, segs: &[&str]) -> Result<Target, ApiError> {
    let (group, version, rest) = match segs {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_path()),
    };
    let store = lock(&inner.store);
    let namespaced_plural = |p: &str| store.registry.find(group, version, p).is_some_and(|k| k.namespaced);
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] if namespaced_plural(plural) => (Some(ns.to_string()), {
            let mut v = vec![*plural];
            v.extend_from_slice(more);
            v
        }),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::no_such_path()),
    };
    let spec = store.registry.find(group, version, plural).cloned().ok_or_else(ApiError::no_such_path)?;
    // A namespaced kind addressed by name without a namespace, or a cluster kind under a namespace, is no path.
    if (spec.namespaced && namespace.is_none() && name.is_some()) || (!spec.namespaced && namespace.is_some()) {
        return Err(ApiError::no_such_path());
    }
    match sub.as_deref() {
        None => {}
        Some("status") if spec.status_subresource => {}
        Some("scale") if spec.scale.is_some() => {}
        Some(_) => return Err(ApiError::no_such_path()),
    }
    Ok(Target { spec, version: version.to_string(), namespace, name, sub })
}

fn selectors(ctx: &RequestCtx<'_>, spec: &ApiResourceSpec) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(ctx.query.get("labelSelector").map(String::as_str).unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        ctx.query.get("fieldSelector").map(String::as_str).unwrap_or_default(),
        &spec.selectable_fields,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

fn list(inner: &Arc<Inner>, ctx: &RequestCtx<'_>, target: &Target, repr: Representation) -> Result<Response, ApiError> {
    if ctx.flag("sendInitialEvents") {
        return Err(list_options_invalid("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    let (labels, fields) = selectors(ctx, &target.spec)?;
    let store = lock(&inner.store);
    let items: Vec<Value> = store
        .list(&target.spec.group, &target.spec.plural, target.namespace.as_deref())
        .into_iter()
        .map(|(_, s)| &s.value)
        .filter(|o| labels.matches(&super::selectors::labels_of(o)) && fields.matches(o))
        .cloned()
        .collect();
    let rv = store.current_rv();
    Ok(json_response(StatusCode::OK, &render::list(&target.spec, &target.version, &items, rv, repr)))
}

fn list_options_invalid(field: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        "meta.k8s.io",
        "ListOptions",
        "",
        vec![super::errors::Cause {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }],
    )
}

fn start_watch(
    inner: &Arc<Inner>,
    ctx: &RequestCtx<'_>,
    target: Target,
    repr: Representation,
) -> Result<Response, ApiError> {
    let send_initial_events = ctx.flag("sendInitialEvents");
    let allow_bookmarks = ctx.flag("allowWatchBookmarks");
    let rv_match = ctx.query.get("resourceVersionMatch").map(String::as_str).unwrap_or_default();
    if send_initial_events {
        if rv_match != "NotOlderThan" {
            return Err(list_options_invalid(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !allow_bookmarks {
            return Err(list_options_invalid(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if !rv_match.is_empty() {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let (labels, fields) = selectors(ctx, &target.spec)?;
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(inner.config.default_watch_timeout);
    let req = WatchRequest {
        spec: target.spec,
        version: target.version,
        namespace: target.namespace,
        resource_version: ctx.query.get("resourceVersion").cloned(),
        send_initial_events,
        allow_bookmarks,
        timeout,
        labels,
        fields,
        repr,
        bookmark_interval: inner.config.bookmark_interval,
    };
    let open = {
        let store = lock(&inner.store);
        watch::open(&store, req)?
    };
    let body = Body::from_stream(open.into_stream());
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn get(inner: &Arc<Inner>, target: &Target, sub: Option<&str>, repr: Representation) -> Result<Response, ApiError> {
    let store = lock(&inner.store);
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    if sub == Some("scale") {
        let scale = ops::get_scale(&store, &target.spec, &ns, &name)?;
        return Ok(json_response(StatusCode::OK, &scale));
    }
    let key = super::store::ObjKey::new(
        &target.spec.group,
        &target.spec.plural,
        if target.spec.namespaced { &ns } else { "" },
        &name,
    );
    let stored = store.get(&key).ok_or_else(|| ApiError::not_found(&target.spec.group, &target.spec.plural, &name))?;
    let rv = store.current_rv();
    Ok(json_response(StatusCode::OK, &render::single(&target.spec, &target.version, &stored.value, repr, rv)))
}

fn sub_of(sub: Option<&str>) -> Sub {
    if sub == Some("status") { Sub::Status } else { Sub::Main }
}

fn put(
    inner: &Arc<Inner>,
    ctx: &RequestCtx<'_>,
    target: &Target,
    sub: Option<&str>,
    repr: Representation,
) -> Result<Response, ApiError> {
    let body = ctx.json_body()?;
    let opts = ctx.write_opts();
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let mut store = lock(&inner.store);
    if sub == Some("scale") {
        let scale = ops::update_scale(&mut store, &target.spec, &target.version, &ns, &name, &body, &opts)?;
        return Ok(json_response(StatusCode::OK, &scale));
    }
    let updated = ops::update(&mut store, &target.spec, &target.version, &ns, &name, body, sub_of(sub), &opts, None)?;
    let rv = store.current_rv();
    Ok(json_response(StatusCode::OK, &render::single(&target.spec, &target.version, &updated, repr, rv)))
}

fn patch(
    inner: &Arc<Inner>,
    ctx: &RequestCtx<'_>,
    target: &Target,
    sub: Option<&str>,
    repr: Representation,
) -> Result<Response, ApiError> {
    let content_type = ctx.header(header::CONTENT_TYPE);
    let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
        ApiError::unsupported_media_type(
            content_type,
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
             application/strategic-merge-patch+json",
        )
    })?;
    let opts = ctx.write_opts();
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let mut store = lock(&inner.store);
    if sub == Some("scale") {
        let scale = ops::patch_scale(&mut store, &target.spec, &target.version, &ns, &name, kind, ctx.body, &opts)?;
        return Ok(json_response(StatusCode::OK, &scale));
    }
    let key_exists = store
        .get(&super::store::ObjKey::new(
            &target.spec.group,
            &target.spec.plural,
            if target.spec.namespaced { &ns } else { "" },
            &name,
        ))
        .is_some();
    let patched =
        ops::patch(&mut store, &target.spec, &target.version, &ns, &name, kind, ctx.body, sub_of(sub), &opts)?;
    let rv = store.current_rv();
    let status = if key_exists { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_response(status, &render::single(&target.spec, &target.version, &patched, repr, rv)))
}

fn delete_opts(ctx: &RequestCtx<'_>) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts { dry_run: ctx.query.get("dryRun").is_some_and(|v| v == "All"), ..Default::default() };
    if !ctx.body.is_empty() {
        let body = ctx.json_body()?;
        opts.uid = body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        opts.resource_version =
            body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        if body.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All")) {
            opts.dry_run = true;
        }
    }
    Ok(opts)
}

fn delete_collection(inner: &Arc<Inner>, ctx: &RequestCtx<'_>, target: &Target) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(ctx, &target.spec)?;
    let opts = delete_opts(ctx)?;
    let mut store = lock(&inner.store);
    let victims: Vec<(String, String)> = store
        .list(&target.spec.group, &target.spec.plural, target.namespace.as_deref())
        .into_iter()
        .filter(|(_, s)| labels.matches(&super::selectors::labels_of(&s.value)) && fields.matches(&s.value))
        .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
        .collect();
    let mut items = Vec::new();
    for (ns, name) in victims {
        let before = store
            .get(&super::store::ObjKey::new(&target.spec.group, &target.spec.plural, &ns, &name))
            .map(|s| s.value.clone());
        ops::delete(&mut store, &target.spec, &ns, &name, &opts)?;
        if let Some(obj) = before {
            items.push(obj);
        }
    }
    let rv = store.current_rv();
    Ok(json_response(StatusCode::OK, &render::list(&target.spec, &target.version, &items, rv, Representation::Full)))
}
