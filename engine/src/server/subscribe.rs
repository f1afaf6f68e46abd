//! `GET /v1/views/{name}/subscribe`: one WebSocket subscriber of a live view.
//!
//! A subscriber is a session reading the view's shared state (see `live::view`): it never adds
//! work to the dataflow. It sends the schema, then a snapshot (or, resuming, the log since its
//! timestamp), then parks its seat in the view's fan-out (`live::fanout`), whose sweepers write
//! the shared, pre-framed changes into its socket without waking it. The session wakes only
//! when the sweepers cannot serve it so: it filters or wants upserts, it is not where a chunk
//! starts (it just joined), its socket did not take a whole write (it was slow to read), or
//! the view has ended. It then catches up from the view's log, receiving changes coalesced into
//! one message at the last timestamp when more are waiting than the view has rows. One whose
//! timestamp has left the log, or whose socket accepts nothing for the send timeout, is told
//! why and disconnected.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use vibelux_operators::row::Row;

use super::websocket::{ClientFrame, ClientFrames};
use crate::live::fanout::framed_tick;
use crate::live::frames;
use crate::live::outlet::{Outlet, Wrote};
use crate::live::protocol::{
    Envelope, coalesce, complete_message, error_message, progress_message, schema_message,
    snapshot_message, updates_message,
};
use crate::live::seat::Seat;
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
                // The token of a browser, which cannot set headers on a WebSocket: the
                // server's guard has read it.
                "access_token" => {}
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
    socket: Arc<TcpStream>,
    seat: Arc<Seat>,
    inbound: ClientFrames,
    view: Arc<LiveView>,
    options: SubscribeOptions,
}

impl Session {
    fn outlet(&self) -> &Outlet {
        &self.seat.outlet
    }

    /// Writes the frames and waits until the socket has taken them. A write the socket takes
    /// at once (the usual case) costs no timer.
    async fn deliver(&mut self, messages: Vec<Bytes>) -> Result<(), End> {
        for message in messages {
            if self.outlet().write(message) == Wrote::Broken {
                return Err(End::Gone);
            }
        }
        self.flush().await
    }

    /// Waits until everything kept for the socket is written, at most the send timeout.
    async fn flush(&mut self) -> Result<(), End> {
        match self.outlet().state() {
            Wrote::All => return Ok(()),
            Wrote::Broken => return Err(End::Gone),
            Wrote::Kept => {}
        }
        match tokio::time::timeout(self.options.send_timeout, self.outlet().flush()).await {
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
        self.outlet().write(frames::text(&error_message(reason)));
        self.outlet().write(frames::close(code, reason));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.outlet().flush()).await;
        self.linger().await;
    }

    /// After closing, waits a moment for the client's close (or its end of the connection), so
    /// that closing the socket does not reset a connection whose last frames are still unread.
    async fn linger(&mut self) {
        let socket = self.socket.clone();
        let closed = async {
            loop {
                if socket.readable().await.is_err() {
                    return;
                }
                let frames = self.inbound.read(&socket);
                if frames.contains(&ClientFrame::Close) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
    }

    /// Parks the seat and waits until a round needs this session, answering pings meanwhile.
    async fn wait(&mut self) -> Result<(), End> {
        let seat = self.seat.clone();
        let socket = self.socket.clone();
        loop {
            tokio::select! {
                _ = seat.woken() => return Ok(()),
                readable = socket.readable() => {
                    if readable.is_err() {
                        return Err(End::Gone);
                    }
                    for frame in self.inbound.read(&socket) {
                        match frame {
                            ClientFrame::Close => {
                                self.outlet().write(frames::close(1000, ""));
                                return Err(End::Gone);
                            }
                            ClientFrame::Ping(payload) => match self.outlet().write(frames::pong(&payload)) {
                                Wrote::All => {}
                                Wrote::Kept => return Ok(()),
                                Wrote::Broken => return Err(End::Gone),
                            },
                            ClientFrame::Other => {}
                        }
                    }
                }
            }
        }
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
        let framed = if self.options.plain() {
            snapshot
                .framed
                .get_or_init(|| {
                    frames::text(&snapshot_message(
                        &self.view,
                        snapshot.time,
                        &snapshot.rows,
                        Envelope::Diff,
                    ))
                })
                .clone()
        } else {
            let rows = self.filtered(&snapshot.rows);
            frames::text(&snapshot_message(
                &self.view,
                snapshot.time,
                &rows,
                self.options.envelope,
            ))
        };
        self.deliver(vec![framed, frames::text(&progress_message(snapshot.time))])
            .await?;
        Ok(snapshot.time)
    }

    /// Sends the log from `cursor` to where the view's latest round ended (the view may be
    /// complete); returns the new cursor, or `None` once complete.
    async fn catch_up(&mut self, cursor: u64) -> Result<Option<u64>, End> {
        let (to, closed) = self.view.delivered();
        if cursor >= to && !closed {
            return Ok(Some(cursor));
        }
        match self.view.since(cursor) {
            Since::Ticks { ticks, .. } => {
                let before = ticks.partition_point(|tick| tick.time < to);
                self.send_changes(cursor, &ticks[..before], to, closed)
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
        let mut messages: Vec<Bytes> = Vec::new();
        let waiting: usize = ticks.iter().map(|tick| tick.updates.len()).sum();
        if ticks.len() > 1 && worth_coalescing(waiting, self.view.len()) {
            let last = ticks.last().expect("non-empty").time;
            let merged = coalesce(ticks.iter().flat_map(|tick| tick.updates.iter()));
            let merged = self.filtered(&merged);
            if !merged.is_empty() {
                messages.push(frames::text(&updates_message(
                    &self.view,
                    last,
                    &merged,
                    self.options.envelope,
                )));
            }
        } else {
            for tick in ticks {
                if self.options.plain() {
                    messages.push(framed_tick(&self.view, tick).clone());
                } else {
                    let updates = self.filtered(&tick.updates);
                    if !updates.is_empty() {
                        messages.push(frames::text(&updates_message(
                            &self.view,
                            tick.time,
                            &updates,
                            self.options.envelope,
                        )));
                    }
                }
            }
        }
        if closed {
            messages.push(frames::text(&complete_message(frontier)));
            self.deliver(messages).await?;
            return Ok(None);
        }
        if frontier > cursor {
            messages.push(frames::text(&progress_message(frontier)));
        }
        self.deliver(messages).await?;
        Ok(Some(frontier.max(cursor)))
    }

    /// The whole subscription; `Ok` once the view is complete and the client has been told.
    async fn run(&mut self) -> Result<(), End> {
        self.deliver(vec![frames::text(&schema_message(
            &self.view,
            self.options.envelope,
        ))])
        .await?;
        let mut cursor = match self.options.resume_from {
            Some(from) => from,
            None => self.snapshot().await?,
        };
        loop {
            match self.catch_up(cursor).await? {
                Some(next) => cursor = next,
                None => return Ok(()),
            }
            self.seat.park(cursor);
            let waited = self.wait().await;
            cursor = self.seat.unpark();
            waited?;
            self.flush().await?;
        }
    }
}

/// Runs one subscriber until the client leaves, falls behind, or the view completes.
pub async fn serve_subscriber(
    socket: Arc<TcpStream>,
    already_read: Bytes,
    view: Arc<LiveView>,
    options: SubscribeOptions,
) {
    let seat = Arc::new(Seat::new(Outlet::new(socket.clone()), options.plain()));
    view.join(&seat);
    let mut session = Session {
        socket,
        seat: seat.clone(),
        inbound: ClientFrames::new(already_read),
        view: view.clone(),
        options,
    };
    let ended = session.run().await;
    view.leave(&seat);
    if ended.is_ok() {
        // The view is complete and the client has been told: close the connection.
        session
            .outlet()
            .write(frames::close(1000, "the view is complete"));
        let _ = tokio::time::timeout(Duration::from_secs(1), session.outlet().flush()).await;
        session.linger().await;
    }
}
