//! `GET /v1/views/{name}/subscribe`: one WebSocket subscriber of a live view.
//!
//! A subscriber is a task reading the view's shared log (see `live::view`): it never adds work
//! to the dataflow. It sends the schema, then a snapshot (or, resuming, the log since its
//! timestamp), then each completed timestamp's changes followed by progress, all that is
//! waiting in one socket write. With many subscribers each pauses between sends (see `pace`),
//! so the server's writes per second stay bounded. A subscriber that finds more changes waiting
//! than the view has rows — it was slow to read — receives them coalesced into one message at
//! the last timestamp; one whose timestamp has left the log, or whose socket accepts nothing for
//! the send timeout, is told why and disconnected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use vibelux_operators::row::Row;

use crate::live::protocol::{
    Envelope, coalesce, complete_message, error_message, progress_message, schema_message,
    snapshot_message, updates_message,
};
use crate::live::view::{LiveView, Since};

/// Whether waiting changes are worth coalescing: only when there are more of them than the
/// view has rows (twice over), as merging costs this subscriber its own encoding, where the
/// per-timestamp messages are encoded once for all.
fn worth_coalescing(waiting: usize, view_rows: usize) -> bool {
    waiting > (2 * view_rows).max(1_000)
}

/// What a subscriber asked for in its query string.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub envelope: Envelope,
    /// Resume with everything from this timestamp on, without a snapshot.
    pub resume_from: Option<u64>,
    /// Only rows whose column equals the text (by column index).
    pub filters: Vec<(usize, String)>,
    /// A send that takes longer than this disconnects the client.
    pub send_timeout: Duration,
}

impl SubscribeOptions {
    /// Reads `envelope=diff|upsert`, `resume_from=TS` and `COLUMN=VALUE` filters.
    pub fn parse(view: &LiveView, query: &[(String, String)]) -> Result<Self, String> {
        let mut options = SubscribeOptions {
            envelope: Envelope::Diff,
            resume_from: None,
            filters: Vec::new(),
            send_timeout: Duration::from_secs(10),
        };
        for (name, value) in query {
            match name.as_str() {
                "envelope" => {
                    options.envelope = match value.as_str() {
                        "diff" => Envelope::Diff,
                        "upsert" if view.key.is_some() => Envelope::Upsert,
                        "upsert" => {
                            return Err(format!(
                                "view `{}` has no key, so it cannot be sent as upserts; use envelope=diff",
                                view.name
                            ));
                        }
                        other => {
                            return Err(format!(
                                "unknown envelope `{other}`: use `diff` or `upsert`"
                            ));
                        }
                    }
                }
                "resume_from" => {
                    options.resume_from = Some(value.parse().map_err(|_| {
                        format!("resume_from must be a timestamp in milliseconds, got `{value}`")
                    })?);
                }
                column => {
                    let index = view
                        .schema
                        .index_of(column)
                        .map_err(|_| {
                            let names: Vec<&str> = view
                                .schema
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect();
                            format!(
                                "`{column}` is not an option (envelope, resume_from) or a column of `{}` ({})",
                                view.name,
                                names.join(", ")
                            )
                        })?;
                    options.filters.push((index, value.clone()));
                }
            }
        }
        Ok(options)
    }

    fn keeps(&self, row: &Row) -> bool {
        self.filters
            .iter()
            .all(|(column, value)| crate::format::datum_text(&row[*column]) == *value)
    }

    /// Whether the shared, unfiltered encoding of a message serves this subscriber.
    fn plain(&self) -> bool {
        self.filters.is_empty() && self.envelope == Envelope::Diff
    }
}

/// Why a session ended early.
enum End {
    /// The client went away, or stopped reading.
    Gone,
    /// Told the client why, then closed.
    Told,
}

struct Session {
    socket: futures_util::stream::SplitSink<WebSocket, Message>,
    view: Arc<LiveView>,
    options: SubscribeOptions,
}

impl Session {
    async fn send(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), End> {
        self.deliver(vec![text.into()]).await
    }

    /// Writes the messages and flushes once: one write to the socket for a whole catch-up.
    async fn deliver(&mut self, messages: Vec<Utf8Bytes>) -> Result<(), End> {
        if messages.is_empty() {
            return Ok(());
        }
        let socket = &mut self.socket;
        let sending = async move {
            for text in messages {
                socket.feed(Message::Text(text)).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(self.options.send_timeout, sending).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                let reason = format!(
                    "the client accepted nothing for {:?}; disconnected (subscribe again for a new snapshot)",
                    self.options.send_timeout
                );
                self.close(1008, &reason).await;
                Err(End::Told)
            }
        }
    }

    /// Sends an error message and a close frame, without waiting long for a stuck client.
    async fn close(&mut self, code: u16, reason: &str) {
        let goodbye = async {
            self.socket
                .send(Message::Text(error_message(reason).into()))
                .await?;
            self.socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.chars().take(100).collect::<String>().into(),
                })))
                .await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }

    fn filtered(&self, updates: &[(Row, i64)]) -> Vec<(Row, i64)> {
        updates
            .iter()
            .filter(|(row, _)| self.options.keeps(row))
            .cloned()
            .collect()
    }

    async fn snapshot(&mut self) -> Result<u64, End> {
        let snapshot = self.view.snapshot();
        let text: Utf8Bytes = if self.options.plain() {
            snapshot
                .encoded
                .get_or_init(|| {
                    snapshot_message(&self.view, snapshot.time, &snapshot.rows, Envelope::Diff)
                        .into()
                })
                .clone()
        } else {
            let rows = self.filtered(&snapshot.rows);
            snapshot_message(&self.view, snapshot.time, &rows, self.options.envelope).into()
        };
        self.deliver(vec![text, progress_message(snapshot.time).into()])
            .await?;
        Ok(snapshot.time)
    }

    /// Sends everything from `cursor` on; returns the new cursor, or `None` once complete.
    async fn catch_up(&mut self, cursor: u64) -> Result<Option<u64>, End> {
        let (ticks, frontier, closed) = match self.view.since(cursor) {
            Since::Ticks {
                ticks,
                frontier,
                closed,
            } => (ticks, frontier, closed),
            Since::Behind { oldest } => {
                let reason = format!(
                    "fell behind: timestamp {cursor} is older than the retained history (oldest {oldest}); subscribe again for a new snapshot"
                );
                self.close(1008, &reason).await;
                return Err(End::Told);
            }
        };
        let mut messages: Vec<Utf8Bytes> = Vec::new();
        let waiting: usize = ticks.iter().map(|tick| tick.updates.len()).sum();
        if ticks.len() > 1 && worth_coalescing(waiting, self.view.len()) {
            let last = ticks.last().expect("non-empty").time;
            let merged = coalesce(ticks.iter().flat_map(|tick| tick.updates.iter()));
            let merged = self.filtered(&merged);
            if !merged.is_empty() {
                messages
                    .push(updates_message(&self.view, last, &merged, self.options.envelope).into());
            }
        } else {
            for tick in &ticks {
                if self.options.plain() {
                    let text = tick.encoded.get_or_init(|| {
                        updates_message(&self.view, tick.time, &tick.updates, Envelope::Diff).into()
                    });
                    messages.push(text.clone());
                } else {
                    let updates = self.filtered(&tick.updates);
                    if !updates.is_empty() {
                        messages.push(
                            updates_message(&self.view, tick.time, &updates, self.options.envelope)
                                .into(),
                        );
                    }
                }
            }
        }
        if closed {
            messages.push(complete_message(frontier).into());
            self.deliver(messages).await?;
            return Ok(None);
        }
        if frontier > cursor {
            messages.push(progress_message(frontier).into());
        }
        self.deliver(messages).await?;
        Ok(Some(frontier.max(cursor)))
    }
}

/// How long a subscriber lets changes gather before sending again: nothing for a few
/// subscribers (each change goes out at once), 10 ms for a thousand, up to 100 ms for ten
/// thousand, so the socket writes per second stay within what the server's threads can do.
fn pace(subscribers: usize) -> Duration {
    Duration::from_micros(subscribers as u64 * 10).min(Duration::from_millis(100))
}

/// Runs one subscriber until the client leaves, falls behind, or the view completes.
pub async fn serve_subscriber(socket: WebSocket, view: Arc<LiveView>, options: SubscribeOptions) {
    let (sink, mut incoming) = socket.split();
    let mut watch = view.watch();
    let mut session = Session {
        socket: sink,
        view,
        options,
    };
    let started = async {
        session
            .send(schema_message(&session.view, session.options.envelope))
            .await?;
        match session.options.resume_from {
            Some(from) => Ok::<u64, End>(from),
            None => session.snapshot().await,
        }
    }
    .await;
    let Ok(mut cursor) = started else { return };
    loop {
        match session.catch_up(cursor).await {
            Ok(Some(next)) => cursor = next,
            Ok(None) => {
                let _ = session.socket.send(Message::Close(None)).await;
                return;
            }
            Err(End::Gone | End::Told) => return,
        }
        let pause = pace(session.view.subscribers());
        if pause >= Duration::from_millis(1) {
            tokio::time::sleep(pause).await;
        }
        // Wait for the frontier to move, noticing a client that closes meanwhile.
        loop {
            tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                message = incoming.next() => match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                },
            }
        }
    }
}
