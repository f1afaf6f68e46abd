//! Subscribers that stay attached to live views for a whole run, as dashboards do.
//!
//! The soak benchmark (`bench/soak.sh`) needs the engine to carry its subscribers for an hour,
//! not to measure them: each subscriber reads every message its view sends and counts it, so
//! the engine's fan-out, change log and socket queues are exercised for real. A subscriber the
//! engine drops (a lagging socket is disconnected, a view refuses) is reported, not retried:
//! over a soak that is a finding.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The engine's address (host:port).
    #[arg(long)]
    address: String,
    /// A view to subscribe to (repeatable).
    #[arg(long = "view", required = true)]
    views: Vec<String>,
    /// Subscribers per view.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// How long to stay attached.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// What one view's subscribers received.
#[derive(Default)]
struct Received {
    snapshots: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

async fn follow(address: String, path: String, received: Arc<Received>) {
    let outcome: anyhow::Result<()> = async {
        let mut socket = crate::subscriber::Subscriber::connect(&address, &path, None).await?;
        while let Some(text) = socket.next_text().await? {
            received.messages.fetch_add(1, Ordering::Relaxed);
            received
                .bytes
                .fetch_add(text.len() as u64, Ordering::Relaxed);
            if text.starts_with(b"{\"type\":\"snapshot\"") {
                received.snapshots.fetch_add(1, Ordering::Relaxed);
            } else if memchr::memmem::find(text, b"\"type\":\"error\"").is_some() {
                anyhow::bail!("subscription ended: {}", String::from_utf8_lossy(text));
            }
        }
        anyhow::bail!("the engine closed the connection")
    }
    .await;
    if let Err(error) = outcome {
        received
            .errors
            .lock()
            .expect("not poisoned")
            .push(format!("{error:#}"));
    }
}

pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the subscribers' runtime")?;
    let mut views = Vec::new();
    for view in &args.views {
        let received = Arc::new(Received::default());
        for _ in 0..args.subscribers {
            runtime.spawn(follow(
                args.address.clone(),
                format!("/v1/views/{view}/subscribe"),
                received.clone(),
            ));
        }
        views.push((view, received));
    }
    // Until the end, or until every subscriber has been dropped (the engine stopped early).
    let deadline = std::time::Instant::now() + args.duration;
    let dropped = || -> usize {
        views
            .iter()
            .map(|(_, received)| received.errors.lock().expect("not poisoned").len())
            .sum()
    };
    while std::time::Instant::now() < deadline && dropped() < views.len() * args.subscribers {
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut lost = 0;
    for (view, received) in &views {
        let errors = received.errors.lock().expect("not poisoned");
        println!(
            "view {view}: {} subscribers, {} snapshots, {} messages, {:.1} MiB received, {} dropped",
            args.subscribers,
            received.snapshots.load(Ordering::Relaxed),
            received.messages.load(Ordering::Relaxed),
            received.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
            errors.len(),
        );
        for error in errors.iter().take(3) {
            println!("  dropped: {error}");
        }
        lost += errors.len();
    }
    runtime.shutdown_background();
    anyhow::ensure!(lost == 0, "{lost} subscribers were dropped before the end");
    Ok(())
}
