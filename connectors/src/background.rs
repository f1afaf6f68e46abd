//! A connector's own thread (an MQTT client's event loop, a Modbus poller), shared by the
//! source's readers on every worker and stopped when the last of them is dropped.
//!
//! Readers are dropped when a run ends (or its dataflow is dropped); the thread must then
//! finish its goodbyes (acknowledgements, a clean DISCONNECT) before the process exits, so
//! dropping the last handle asks it to stop and waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The shared handle; clone the `Arc` into every reader.
pub struct BackgroundThread {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundThread {
    /// Spawns `name`, running `work` with the flag that says when to stop.
    pub fn spawn(
        name: String,
        work: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Arc<BackgroundThread>> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || work(flag))?;
        Ok(Arc::new(BackgroundThread {
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }
}

impl Drop for BackgroundThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}
