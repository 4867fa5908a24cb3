//! Failures as the API server reports them: a `meta/v1` `Status` body with the HTTP code, reason, message and
//! details worded like kube-apiserver's, so `kube::Error::Api` checks (`is_not_found`, `reason == "Conflict"`)
//! behave exactly as they do against a real cluster.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One field-level cause of a failure (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`, `FieldManagerConflict`.
    pub reason: String,
    /// Human-readable text.
    pub message: String,
    /// The field path, e.g. `spec.replicas` or `.spec.holderIdentity`.
    pub field: String,
}

/// `Status.details`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (the resource plural for most errors, the Kind for `Invalid`).
    pub kind: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
}

/// A request that failed, rendered as a `Status` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, boxed to keep `Result<_, ApiError>` small.
    pub details: Box<Details>,
}

/// `deployments.apps` or `pods`: how the real server names a resource in messages.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") }
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self { code, reason: reason.to_string(), message: message.into(), details: Box::default() }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details.group = Some(group.to_string());
        self.details.kind = Some(kind.to_string());
        self.details.name = Some(name.to_string());
        self
    }

    /// 422 for a patch that cannot be applied (a failed JSON Patch `test`, a missing path).
    pub fn unprocessable_patch(group: &str, kind: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message).with_details(group, kind, name)
    }

    /// 404: `deployments.apps "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, plural)))
            .with_details(group, plural, name)
    }

    /// 404 for a path that names no served resource or subresource.
    pub fn no_such_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409: `deployments.apps "web" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(group, plural)))
            .with_details(group, plural, name)
    }

    /// 409: the optimistic-concurrency failure on a stale `resourceVersion`.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                 changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }

    /// 409: a precondition (uid, resourceVersion) in a request did not hold.
    pub fn precondition_failed(group: &str, plural: &str, name: &str, what: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {what}", qualified(group, plural)),
        )
        .with_details(group, plural, name)
    }

    /// 409: server-side apply would change fields another manager owns.
    /// `conflicts` holds (manager, field path such as `.spec.holderIdentity`).
    pub fn apply_conflict(group: &str, plural: &str, name: &str, conflicts: &[(String, String)]) -> Self {
        let lines: Vec<String> =
            conflicts.iter().map(|(manager, field)| format!("conflict with \"{manager}\": {field}")).collect();
        let message = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!("Apply failed with {} conflicts: {}", lines.len(), lines.join("\n"))
        };
        let mut err = Self::new(409, "Conflict", message).with_details(group, plural, name);
        err.details.causes = conflicts
            .iter()
            .map(|(manager, field)| Cause {
                reason: "FieldManagerConflict".to_string(),
                message: format!("conflict with \"{manager}\""),
                field: field.clone(),
            })
            .collect();
        err
    }

    /// 422: `Deployment.apps "web" is invalid: spec.selector: Required value`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let subject = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let texts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let joined = if texts.len() == 1 { texts[0].clone() } else { format!("[{}]", texts.join(", ")) };
        let mut err = Self::new(422, "Invalid", format!("{subject} \"{name}\" is invalid: {joined}"))
            .with_details(group, kind, name);
        err.details.causes = causes;
        err
    }

    /// 400 with a free-form message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 for a verb the resource does not serve.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    /// 415 for a body in a format the fake does not read; `accepted` lists what it does.
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}; got {content_type:?}"
            ),
        )
    }

    /// 410: a watch or list from a resourceVersion older than the compaction point.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 500 with a free-form message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The error for an injected fault with an arbitrary code.
    pub fn injected(code: u16) -> Self {
        let (reason, message) = match code {
            409 => (
                "Conflict",
                "injected fault: the object has been modified; please apply your changes to the latest version and try again",
            ),
            410 => ("Expired", "injected fault: too old resource version"),
            429 => ("TooManyRequests", "injected fault: too many requests, please try again later"),
            500 => {
                ("InternalError", "injected fault: an error on the server has prevented the request from succeeding")
            }
            503 => ("ServiceUnavailable", "injected fault: the server is currently unable to handle the request"),
            504 => ("Timeout", "injected fault: the server was unable to return a response in the time allotted"),
            403 => ("Forbidden", "injected fault: forbidden"),
            404 => ("NotFound", "injected fault: the server could not find the requested resource"),
            _ => ("InternalError", "injected fault"),
        };
        Self::new(code, reason, message)
    }

    /// The `Status` object as JSON.
    pub fn to_status(&self) -> Value {
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if let Some(name) = &d.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &d.group {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &d.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> =
                d.causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            map.insert("details".into(), Value::Object(details));
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// A successful `Status` (what DELETE returns for kinds that do not return the deleted object).
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    })
}
