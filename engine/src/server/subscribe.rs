//! `GET /v1/views/{name}/subscribe`: one WebSocket subscriber of a live view.
//!
//! A subscriber is a task reading the view's shared state (see `live::view`): it never adds
//! work to the dataflow. It sends the schema, then a snapshot (or, resuming, the log since its
//! timestamp), then follows the view's delivery rounds (`live::rounds`): each round's changes
//! and progress go out in one socket write, shared with every subscriber at the same place and
//! encoded once. A subscriber that finds more changes waiting than the view has rows — it was
//! slow to read — receives them coalesced into one message at the last timestamp; one whose
//! timestamp has left the log, or whose socket accepts nothing for the send timeout, is told why
//! and disconnected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use vibelux_operators::row::Row;

use crate::live::protocol::{
    Envelope, coalesce, complete_message, error_message, progress_message, schema_message,
    snapshot_message, updates_message,
};
use crate::live::rounds::Round;
use crate::live::view::{LiveView, Since, Tick};

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
    socket: WebSocket,
    view: Arc<LiveView>,
    options: SubscribeOptions,
}

impl Session {
    async fn send(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), End> {
        self.deliver(&[text.into()]).await
    }

    /// Writes the messages and flushes once: one write to the socket for a whole round. A
    /// write the socket takes at once (the usual case) costs no timer.
    async fn deliver(&mut self, messages: &[Utf8Bytes]) -> Result<(), End> {
        if messages.is_empty() {
            return Ok(());
        }
        let sent = {
            let socket = &mut self.socket;
            let sending = async move {
                for text in messages {
                    socket.feed(Message::Text(text.clone())).await?;
                }
                socket.flush().await
            };
            tokio::pin!(sending);
            match (&mut sending).now_or_never() {
                Some(sent) => Ok(sent),
                None => tokio::time::timeout(self.options.send_timeout, sending).await,
            }
        };
        match sent {
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
        self.deliver(&[text, progress_message(snapshot.time).into()])
            .await?;
        Ok(snapshot.time)
    }

    /// Sends the log from `cursor` to the view's frontier, as a subscriber does on joining
    /// (the view may be complete already); returns the new cursor, or `None` once complete.
    async fn catch_up(&mut self, cursor: u64) -> Result<Option<u64>, End> {
        match self.view.since(cursor) {
            Since::Ticks {
                ticks,
                frontier,
                closed,
            } => self.send_changes(cursor, &ticks, frontier, closed).await,
            Since::Behind { oldest } => self.fell_behind(cursor, oldest).await,
        }
    }

    /// Sends one delivery round: the shared encoding when this subscriber is where the round
    /// starts, else its own messages from the round or, if it missed rounds, from the log.
    async fn follow(&mut self, round: &Round, cursor: u64) -> Result<Option<u64>, End> {
        if cursor >= round.to && !round.closed {
            return Ok(Some(cursor));
        }
        if cursor == round.from && self.options.plain() {
            self.deliver(&round.messages(&self.view)).await?;
            return Ok((!round.closed).then_some(round.to));
        }
        if cursor >= round.from {
            return self
                .send_changes(cursor, &round.ticks, round.to, round.closed)
                .await;
        }
        match self.view.since(cursor) {
            Since::Ticks { ticks, .. } => {
                let before = ticks.partition_point(|tick| tick.time < round.to);
                self.send_changes(cursor, &ticks[..before], round.to, round.closed)
                    .await
            }
            Since::Behind { oldest } => self.fell_behind(cursor, oldest).await,
        }
    }

    async fn fell_behind(&mut self, cursor: u64, oldest: u64) -> Result<Option<u64>, End> {
        let reason = format!(
            "fell behind: timestamp {cursor} is older than the retained history (oldest {oldest}); subscribe again for a new snapshot"
        );
        self.close(1008, &reason).await;
        Err(End::Told)
    }

    /// Sends the changes of the ticks at or after `cursor` (coalesced when many are waiting),
    /// then progress to `frontier` or, if `closed`, completion.
    async fn send_changes(
        &mut self,
        cursor: u64,
        ticks: &[Arc<Tick>],
        frontier: u64,
        closed: bool,
    ) -> Result<Option<u64>, End> {
        let ticks = &ticks[ticks.partition_point(|tick| tick.time < cursor)..];
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
            for tick in ticks {
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
            self.deliver(&messages).await?;
            return Ok(None);
        }
        if frontier > cursor {
            messages.push(progress_message(frontier).into());
        }
        self.deliver(&messages).await?;
        Ok(Some(frontier.max(cursor)))
    }
}

/// Runs one subscriber until the client leaves, falls behind, or the view completes.
pub async fn serve_subscriber(socket: WebSocket, view: Arc<LiveView>, options: SubscribeOptions) {
    let mut rounds = view.rounds();
    let mut session = Session {
        socket,
        view,
        options,
    };
    let started = async {
        session
            .send(schema_message(&session.view, session.options.envelope))
            .await?;
        let cursor = match session.options.resume_from {
            Some(from) => from,
            None => session.snapshot().await?,
        };
        session.catch_up(cursor).await
    }
    .await;
    let mut cursor = match started {
        Ok(Some(cursor)) => cursor,
        Ok(None) => return session.finish().await,
        Err(End::Gone | End::Told) => return,
    };
    loop {
        // Wait for the next round, noticing a client that closes meanwhile.
        tokio::select! {
            changed = rounds.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            message = session.socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            },
        }
        let round = rounds.borrow_and_update().clone();
        let followed = session.follow(&round, cursor).await;
        round.finished();
        match followed {
            Ok(Some(next)) => cursor = next,
            Ok(None) => return session.finish().await,
            Err(End::Gone | End::Told) => return,
        }
    }
}

impl Session {
    /// The view is complete and the client has been told: close the socket.
    async fn finish(mut self) {
        let _ = self.socket.send(Message::Close(None)).await;
    }
}
