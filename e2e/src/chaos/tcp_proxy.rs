//! A loopback TCP proxy that can cut every connection through it at once (a watch closed, a request lost
//! half-way, as a restarting API server or load balancer does) and refuse new ones for a while (a server that
//! is gone: connection refused, not a timeout).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct State {
    upstream: SocketAddr,
    /// Bumped to close every open connection.
    epoch: watch::Sender<u64>,
    accepted: AtomicUsize,
    refusing: AtomicBool,
}

/// The proxy; stops (and closes its connections) when dropped.
pub struct TcpChaos {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // The port is rebound after a refusing spell: connections of the previous listener may be in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl TcpChaos {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (epoch, _) = watch::channel(0);
        let state =
            Arc::new(State { upstream, epoch, accepted: AtomicUsize::new(0), refusing: AtomicBool::new(false) });
        let acceptor = tokio::spawn(accept(listener, state.clone()));
        Ok(Self { addr, state, acceptor: Mutex::new(Some(acceptor)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection (watches included); new ones are accepted as before.
    pub fn sever(&self) {
        self.state.epoch.send_modify(|e| *e += 1);
    }

    /// Stops listening (connection refused) and closes every open connection, or listens again on the same port.
    pub async fn set_refusing(&self, refusing: bool) {
        if self.state.refusing.swap(refusing, Ordering::SeqCst) == refusing {
            return;
        }
        if refusing {
            let acceptor = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(acceptor) = acceptor {
                acceptor.abort();
                let _ = acceptor.await;
            }
            self.sever();
            return;
        }
        for _ in 0..50 {
            if let Ok(listener) = listen(self.addr) {
                let acceptor = tokio::spawn(accept(listener, self.state.clone()));
                *self.acceptor.lock().unwrap_or_else(PoisonError::into_inner) = Some(acceptor);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(addr = %self.addr, "the chaos proxy could not listen again");
    }
}

impl Drop for TcpChaos {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner).take() {
            acceptor.abort();
        }
        self.sever();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        let mut closed = state.epoch.subscribe();
        let upstream = state.upstream;
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = closed.changed() => {}
            }
        });
    }
}
