//! Where the sink operator's writer runs: on the dataflow worker, for writers of local files
//! and the console, or on a thread of its own behind a bounded queue, for writers that wait on a
//! network peer ([`SinkWriter::waits`]).

use std::sync::Arc;

use timely::scheduling::SyncActivator;
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use super::writer_thread::WriterThread;
use super::{SinkMetrics, WriteBatch};

pub enum Delivery<D: Send + 'static> {
    Here {
        writer: Box<dyn SinkWriter>,
        write_batch: WriteBatch<D>,
        metrics: Arc<SinkMetrics>,
    },
    Queued(WriterThread<D>),
}

impl<D: Send + 'static> Delivery<D> {
    /// Puts a writer that waits on a thread of its own.
    pub fn of(
        writer: Box<dyn SinkWriter>,
        write_batch: WriteBatch<D>,
        metrics: Arc<SinkMetrics>,
        wake: impl FnOnce() -> SyncActivator,
    ) -> Delivery<D> {
        if !writer.waits() {
            return Delivery::Here {
                writer,
                write_batch,
                metrics,
            };
        }
        let describe = writer.describe();
        match WriterThread::spawn(writer, write_batch, metrics, wake()) {
            Ok(thread) => Delivery::Queued(thread),
            // As `std::thread::spawn` does: the process is out of threads.
            Err(error) => panic!("cannot start a thread for the sink {describe}: {error}"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Delivery::Here { writer, .. } => writer.describe(),
            Delivery::Queued(thread) => thread.describe(),
        }
    }

    /// Whether more rows may be handed over now.
    pub fn has_room(&self) -> bool {
        match self {
            Delivery::Here { .. } => true,
            Delivery::Queued(thread) => thread.has_room(),
        }
    }

    /// Writes a batch, or hands it over.
    pub fn write_batch(&mut self, data: &mut Vec<D>) {
        match self {
            Delivery::Here {
                writer,
                write_batch,
                metrics,
            } => write_batch(writer.as_mut(), data, metrics),
            Delivery::Queued(thread) => thread.write_batch(data),
        }
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Delivery::Here { writer, .. } => writer.flush(),
            Delivery::Queued(thread) => thread.flush(),
        }
    }

    pub fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            Delivery::Here { writer, .. } => writer.finish(),
            Delivery::Queued(thread) => thread.finish(),
        }
    }

    /// The writer's part of a checkpoint; the operator has flushed just before.
    pub fn checkpoint(&mut self, cut: u64) -> Result<Vec<u8>, SinkError> {
        match self {
            Delivery::Here { writer, .. } => writer.checkpoint(cut),
            Delivery::Queued(thread) => thread.checkpoint(cut),
        }
    }

    pub fn checkpoint_stored(&mut self, part: &[u8]) -> Result<(), SinkError> {
        match self {
            Delivery::Here { writer, .. } => writer.checkpoint_stored(part),
            Delivery::Queued(thread) => thread.checkpoint_stored(part),
        }
    }

    pub fn delivers_on_write(&self) -> bool {
        match self {
            Delivery::Here { writer, .. } => writer.delivers_on_write(),
            Delivery::Queued(thread) => thread.delivers_on_write(),
        }
    }

    pub fn take_delivered(&mut self) -> u64 {
        match self {
            Delivery::Here { writer, .. } => writer.take_delivered(),
            Delivery::Queued(thread) => thread.take_delivered(),
        }
    }

    pub fn held_rows(&self) -> u64 {
        match self {
            Delivery::Here { writer, .. } => writer.held_rows(),
            Delivery::Queued(thread) => thread.held_rows(),
        }
    }

    pub fn unacknowledged(&self) -> u64 {
        match self {
            Delivery::Here { writer, .. } => writer.unacknowledged(),
            Delivery::Queued(thread) => thread.unacknowledged(),
        }
    }
}
