//! The sending end of one subscriber's socket, shared by its session and the view's fan-out.
//!
//! Both write whole frames: a write the socket takes at once goes straight out, from whichever
//! thread makes it, and whatever the socket does not take is kept, in order, until the session
//! flushes it. While bytes are kept, later writes queue behind them, so frames never interleave
//! and the fan-out never waits on a slow reader.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpStream;

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// The socket took everything.
    All,
    /// Some is kept until the socket can take it: the session must flush.
    Kept,
    /// The connection is gone.
    Broken,
}

#[derive(Default)]
struct Kept {
    queue: VecDeque<Bytes>,
    broken: bool,
}

pub struct Outlet {
    socket: Arc<TcpStream>,
    kept: Mutex<Kept>,
}

impl Outlet {
    pub fn new(socket: Arc<TcpStream>) -> Self {
        Outlet {
            socket,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes what the socket takes now and keeps the rest, never waiting.
    pub fn write(&self, bytes: Bytes) -> Wrote {
        if bytes.is_empty() {
            return self.state();
        }
        let mut kept = self.kept();
        if kept.broken {
            return Wrote::Broken;
        }
        kept.queue.push_back(bytes);
        self.drain(&mut kept)
    }

    /// Writes kept bytes until the socket takes no more.
    fn drain(&self, kept: &mut Kept) -> Wrote {
        while let Some(front) = kept.queue.front_mut() {
            match self.socket.try_write(front) {
                Ok(written) if written == front.len() => {
                    kept.queue.pop_front();
                }
                Ok(written) => {
                    let _ = front.split_to(written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Wrote::Kept,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    kept.broken = true;
                    kept.queue.clear();
                    return Wrote::Broken;
                }
            }
        }
        Wrote::All
    }

    /// Whether bytes are kept, or the connection is gone.
    pub fn state(&self) -> Wrote {
        let kept = self.kept();
        if kept.broken {
            Wrote::Broken
        } else if kept.queue.is_empty() {
            Wrote::All
        } else {
            Wrote::Kept
        }
    }

    /// Waits until everything kept has been written.
    pub async fn flush(&self) -> io::Result<()> {
        loop {
            let wrote = {
                let mut kept = self.kept();
                if kept.broken {
                    Wrote::Broken
                } else {
                    self.drain(&mut kept)
                }
            };
            match wrote {
                Wrote::All => return Ok(()),
                Wrote::Broken => return Err(io::ErrorKind::BrokenPipe.into()),
                Wrote::Kept => self.socket.writable().await?,
            }
        }
    }
}
