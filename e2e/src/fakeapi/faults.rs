//! Test controls around the API: injected failures ("answer the next two scale PATCHes with 409") and a log of
//! every request the fake received, so a test can count what a controller actually sent.

/// Fails matching requests with `status` (as a proper `Status` body) `times` times, then lets them through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP method to match (`"PATCH"`), or None for any.
    pub method: Option<String>,
    /// Substring the request path must contain, e.g. `"/deployments/web/scale"`.
    pub path_contains: String,
    /// HTTP status to answer with: 409, 429, 500, 503, ...
    pub status: u16,
    /// How many matching requests fail.
    pub times: usize,
}

impl Fault {
    /// A fault for `method` on paths containing `path_contains`.
    pub fn new(method: &str, path_contains: &str, status: u16, times: usize) -> Self {
        Self { method: Some(method.to_uppercase()), path_contains: path_contains.to_string(), status, times }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (empty if none).
    pub query: String,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Body as UTF-8 (lossy).
    pub body: String,
    /// HTTP status the fake answered with (for watches: the status of the stream's start).
    pub status: u16,
}

impl RecordedRequest {
    /// Whether this was a watch request.
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// Active faults, consumed in order.
#[derive(Debug, Default)]
pub struct Faults {
    active: Vec<Fault>,
}

impl Faults {
    /// Adds a fault.
    pub fn add(&mut self, fault: Fault) {
        self.active.push(fault);
    }

    /// The status to fail this request with, if a fault matches (consuming one of its `times`).
    pub fn take(&mut self, method: &str, path: &str) -> Option<u16> {
        let fault = self.active.iter_mut().find(|f| f.matches(method, path))?;
        fault.times -= 1;
        let status = fault.status;
        self.active.retain(|f| f.times > 0);
        Some(status)
    }

    /// Removes every fault.
    pub fn clear(&mut self) {
        self.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_exactly_n_times_on_matching_requests() {
        let mut faults = Faults::default();
        faults.add(Fault::new("patch", "/scale", 409, 2));
        assert_eq!(faults.take("GET", "/apis/apps/v1/namespaces/d/deployments/w/scale"), None);
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/namespaces/d/deployments/w"), None);
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/namespaces/d/deployments/w/scale"), Some(409));
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/namespaces/d/deployments/w/scale"), Some(409));
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/namespaces/d/deployments/w/scale"), None);
    }
}
