//! Runs the fake Kubernetes API server on its own, for poking at it with kubectl or running the `foresight`
//! binary against it by hand: `fake-apiserver --kubeconfig /tmp/fake.kubeconfig`, then
//! `kubectl --kubeconfig /tmp/fake.kubeconfig get deploy -A`. `/metrics` counts the requests it served as
//! kube-apiserver does (`apiserver_request_total`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use foresight_e2e::fakeapi::FakeApiServer;

/// A fake Kubernetes API server (plain HTTP, in memory).
#[derive(Debug, Parser)]
struct Args {
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long, default_value = "fake-apiserver.kubeconfig")]
    kubeconfig: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Report Deployments/StatefulSets/ReplicaSets as converged after every change (status follows spec).
    #[arg(long)]
    simulate_workloads: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Nothing outside this process can read the request log, which would grow by every request and its body
    // (gigabytes in a benchmark of 10,000 policies); `/metrics` counts requests instead.
    let server =
        FakeApiServer::builder().simulate_workload_controllers(args.simulate_workloads).record_requests(false).build();
    let addr = server.serve_tcp_at(args.listen).await?;
    server.write_kubeconfig(&args.kubeconfig)?;
    println!("fake API server listening on http://{addr}; kubeconfig written to {}", args.kubeconfig.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
