//! How a stateful operator or sink takes part in checkpoints: its key, the cut its group is
//! taking, the part it restores from.

use serde::{Deserialize, Serialize};

use super::{Checkpoints, Chunker, Cut, FINAL_CUT, decode, encode};

/// How one stateful operator (or sink) takes part: the run's checkpoints and its part's key.
#[derive(Clone, Debug)]
pub struct Participant {
    pub checkpoints: std::sync::Arc<Checkpoints>,
    pub key: String,
    /// The part of the dataflow it is in, whose cut it answers.
    group: Option<usize>,
}

impl Participant {
    /// Registers `key` as a participant that is not a source.
    pub fn register(checkpoints: &std::sync::Arc<Checkpoints>, key: String) -> Self {
        checkpoints.register(&key, false);
        Participant {
            checkpoints: checkpoints.clone(),
            group: checkpoints.group_of(&key),
            key,
        }
    }

    /// The cut being taken (as this participant's group sees it), unless this participant
    /// answered it (`answered` is the id of the last cut it answered). Read per batch: see
    /// [`Checkpoints::current_cut`].
    pub fn pending(&self, answered: u64) -> Option<Cut> {
        self.checkpoints
            .current_cut_in(self.group)
            .filter(|cut| cut.id > answered)
    }

    /// The part this participant left in the checkpoint the run resumes from.
    pub fn restored(&self) -> Option<Vec<u8>> {
        self.checkpoints.take_restored(&self.key)
    }

    /// The parts a keyed operator restores from: its own, or every old worker's when the
    /// worker count changed (see [`Checkpoints::restored_parts`]); decoded, and empty when the
    /// run starts afresh. A part that cannot be read fails the worker, naming `what`.
    pub fn restored_parts<T: for<'de> Deserialize<'de>>(
        participant: Option<&Participant>,
        what: &str,
    ) -> Vec<T> {
        let Some(participant) = participant else {
            return Vec::new();
        };
        participant
            .checkpoints
            .restored_parts(&participant.key)
            .iter()
            .map(|part| decode(what, part).unwrap_or_else(|error| panic!("{error}")))
            .collect()
    }

    pub fn submit(&self, cut: Cut, part: Vec<u8>) {
        self.checkpoints.submit(&self.key, cut.id, part);
    }

    /// Leaves `state` as this participant's part of `cut`, encoded straight into the
    /// checkpoint store where there is one (so a large state is not held a second time, as
    /// bytes, until it is stored), else whole.
    pub fn submit_encoded<T: Serialize>(&self, cut: Cut, state: &T) {
        match self.encode_into_store(cut.id, state) {
            Some((chunks, size)) => self
                .checkpoints
                .submit_chunked(&self.key, cut.id, chunks, size),
            None => self.submit(cut, encode(state)),
        }
    }

    /// Leaves `state` as this participant's final part (see [`Participant::submit_final_after`]),
    /// encoded as [`Participant::submit_encoded`] encodes.
    pub fn submit_final_encoded<T: Serialize>(&self, state: &T, emitted_up_to: Option<u64>) {
        match self.encode_into_store(FINAL_CUT, state) {
            Some((chunks, size)) => {
                self.checkpoints
                    .submit_final_chunked(&self.key, chunks, size, emitted_up_to)
            }
            None => match emitted_up_to {
                Some(time) => self.submit_final_after(encode(state), time),
                None => self.submit_final(encode(state)),
            },
        }
    }

    /// Encodes `state` into the store lent to this process, chunk by chunk: the chunks' names
    /// and the size; `None` where there is no store, or its writer is gone (the part is then
    /// handed over whole, for the checkpointer to store or to say why it cannot).
    fn encode_into_store<T: Serialize>(&self, id: u64, state: &T) -> Option<(Vec<String>, u64)> {
        let store = self.checkpoints.chunk_store()?;
        let (mut chunks, mut size) = (Vec::new(), 0u64);
        let mut chunker = Chunker::new(|chunk: Vec<u8>| {
            size += chunk.len() as u64;
            let name = store.put(id, chunk).map_err(std::io::Error::other)?;
            chunks.push(name);
            Ok(())
        });
        let written = bincode::serialize_into(&mut chunker, state)
            .map_err(|error| error.to_string())
            .and_then(|()| chunker.finish().map_err(|error| error.to_string()));
        match written {
            Ok(()) => Some((chunks, size)),
            Err(error) => {
                tracing::warn!(
                    key = self.key,
                    "cannot encode a part into the store: {error}"
                );
                None
            }
        }
    }

    pub fn submit_final(&self, part: Vec<u8>) {
        self.checkpoints.submit_final(&self.key, part);
    }

    /// The final part of an operator whose outputs were stamped up to `emitted_up_to`: see
    /// [`Checkpoints::submit_final_after`].
    pub fn submit_final_after(&self, part: Vec<u8>, emitted_up_to: u64) {
        self.checkpoints
            .submit_final_after(&self.key, part, emitted_up_to);
    }
}
