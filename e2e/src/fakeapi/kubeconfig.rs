//! A kubeconfig pointing at the fake over plain HTTP, for the `foresight` binary and `kubectl --kubeconfig`.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;

/// Why a kubeconfig could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The server is not listening on TCP yet.
    #[error("the fake API server is not serving over TCP; call serve_tcp() first")]
    NotServing,
    /// Serialising the document failed.
    #[error("serialising kubeconfig: {0}")]
    Serialize(#[from] serde_saphyr::SerializeError),
    /// Writing the file failed.
    #[error("writing kubeconfig to {path}: {source}")]
    Write {
        /// Target file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The kubeconfig document (context `fake`, namespace `default`, no credentials) as YAML.
pub fn render(addr: SocketAddr, namespace: &str) -> Result<String, KubeconfigError> {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": format!("http://{addr}")}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        "current-context": "fake",
        "preferences": {},
    });
    Ok(serde_saphyr::to_string(&doc)?)
}

/// Writes the kubeconfig to `path`.
pub fn write(addr: SocketAddr, path: &Path) -> Result<(), KubeconfigError> {
    let text = render(addr, "default")?;
    std::fs::write(path, text).map_err(|source| KubeconfigError::Write { path: path.display().to_string(), source })
}
