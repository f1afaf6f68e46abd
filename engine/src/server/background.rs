//! What the HTTP server and the Postgres port share: a small tokio runtime of their own, on
//! threads beside the timely workers and stopped when dropped, and an accept loop that bounds
//! how many connections are served at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::{MAX_CONNECTIONS, PLANNING_STACK_BYTES};

/// A runtime for the server named `name`: two threads, and blocking threads with room to plan
/// statements (planning recurses through every level of an expression).
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(PLANNING_STACK_BYTES)
        .thread_name(name)
        .enable_all()
        .build()
}

/// A server running `serve` on `runtime` on a thread of its own; dropped, it stops (not
/// gracefully: subscribers of a run that ended have been told so, and a stuck client must not
/// hold the process open).
pub struct Background {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(
        name: &str,
        runtime: tokio::runtime::Runtime,
        serve: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Background> {
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(Background {
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections on `listener` and serves each with the task `connection` makes, at most
/// [`MAX_CONNECTIONS`] at once (further clients wait in the listen queue). Sockets send small
/// writes at once (live updates must not wait for Nagle's algorithm to meet the client's
/// delayed acknowledgement, a 40 ms stall).
pub async fn accept_each<F, Fut>(listener: TcpListener, what: &'static str, mut connection: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait for connections to close.
                tracing::warn!(%error, "cannot accept a {what} connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
        let task = connection(stream, peer);
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }
}
