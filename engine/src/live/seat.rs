//! A subscriber's place in a view's fan-out.
//!
//! A session that has caught up parks its seat at its cursor. When the view's sweepers (see
//! `live::fanout`) find a parked, unfiltered seat whose cursor is where a chunk starts, they
//! write everything from there to the newest chunk into its socket themselves and move the
//! cursor on: the session's task is not woken at all, so ten thousand subscribers cost ten
//! thousand socket writes per sweep and nothing else. Anything else — a cursor elsewhere, a
//! filter, a socket that did not take the whole write, the view's end — wakes the session
//! (once per chunk), which takes the seat back, catches up on its own from the view's log, and
//! parks again.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::outlet::{Outlet, Wrote};

struct Place {
    /// Everything before this has been written (or kept) for the subscriber.
    cursor: u64,
    /// The session waits: the sweepers may write for it.
    parked: bool,
    /// The newest chunk end the session was woken for (`u64::MAX`: woken for the view's end).
    woken_for: u64,
}

pub struct Seat {
    pub outlet: Outlet,
    /// Takes the view's changes as they are (no filter, diff envelope).
    plain: bool,
    place: Mutex<Place>,
    wake: Notify,
}

impl Seat {
    pub fn new(outlet: Outlet, plain: bool) -> Self {
        Seat {
            outlet,
            plain,
            place: Mutex::new(Place {
                cursor: 0,
                parked: false,
                woken_for: 0,
            }),
            wake: Notify::new(),
        }
    }

    fn place(&self) -> MutexGuard<'_, Place> {
        self.place
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session waits for changes from `cursor` on.
    pub fn park(&self, cursor: u64) {
        let mut place = self.place();
        place.cursor = cursor;
        place.parked = true;
    }

    /// The session takes the seat back to write itself; returns the cursor, which a sweeper
    /// may have moved.
    pub fn unpark(&self) -> u64 {
        let mut place = self.place();
        place.parked = false;
        place.cursor
    }

    /// Resolves once the session is needed (a permit is kept if it is not waiting yet).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Offers the changes up to `newest` (the view ends there if `closed`): written here when
    /// `bytes_from(cursor)` has them for this seat, else the session is woken. Returns whether
    /// anything was done.
    pub fn offer(
        &self,
        newest: u64,
        closed: bool,
        bytes_from: &mut impl FnMut(u64) -> Option<Bytes>,
    ) -> bool {
        let mut place = self.place();
        if closed {
            // Every session finishes the view itself.
            if place.woken_for == u64::MAX {
                return false;
            }
            place.woken_for = u64::MAX;
        } else {
            if place.cursor >= newest {
                return false;
            }
            if self.plain
                && place.parked
                && let Some(bytes) = bytes_from(place.cursor)
            {
                place.cursor = newest;
                if self.outlet.write(bytes) == Wrote::All {
                    return true;
                }
                // Kept or broken: the session flushes, or notices the connection is gone.
                place.parked = false;
            } else if place.woken_for >= newest {
                return false;
            }
            place.woken_for = newest;
        }
        drop(place);
        self.wake.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn connected() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Arc::new(server), client)
    }

    async fn woken(seat: &Seat) -> bool {
        tokio::time::timeout(Duration::from_millis(100), seat.woken())
            .await
            .is_ok()
    }

    /// The bytes of a chunk starting at 5.
    fn from_5(cursor: u64) -> Option<Bytes> {
        (cursor == 5).then(|| Bytes::from_static(b"round"))
    }

    #[tokio::test]
    async fn a_parked_seat_where_a_chunk_starts_is_written_without_waking_its_session() {
        let (server, mut client) = connected().await;
        let seat = Seat::new(Outlet::new(server), true);
        seat.park(5);
        assert!(seat.offer(9, false, &mut from_5));
        let mut read = [0u8; 5];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"round");
        assert!(!woken(&seat).await);
        assert!(!seat.offer(9, false, &mut from_5), "nothing new");
        assert_eq!(seat.unpark(), 9);
    }

    #[tokio::test]
    async fn seats_elsewhere_filtered_or_at_the_end_are_woken_and_not_written() {
        let (server, _client) = connected().await;
        let elsewhere = Seat::new(Outlet::new(server.clone()), true);
        elsewhere.park(3);
        assert!(elsewhere.offer(9, false, &mut from_5));
        assert!(woken(&elsewhere).await);
        // Woken once per chunk, not once per sweep.
        assert!(!elsewhere.offer(9, false, &mut from_5));
        assert!(!woken(&elsewhere).await);
        assert!(elsewhere.offer(11, false, &mut from_5));
        assert!(woken(&elsewhere).await);
        assert_eq!(elsewhere.unpark(), 3);

        let filtered = Seat::new(Outlet::new(server.clone()), false);
        filtered.park(5);
        assert!(filtered.offer(9, false, &mut from_5));
        assert!(woken(&filtered).await);
        assert_eq!(filtered.unpark(), 5);

        let ahead = Seat::new(Outlet::new(server.clone()), true);
        ahead.park(12);
        assert!(!ahead.offer(9, false, &mut from_5));
        assert!(!woken(&ahead).await);

        let ending = Seat::new(Outlet::new(server), true);
        ending.park(12);
        assert!(ending.offer(12, true, &mut from_5));
        assert!(woken(&ending).await);
        assert!(!ending.offer(12, true, &mut from_5));
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_kept_in_order_for_the_session() {
        let (server, mut client) = connected().await;
        let seat = Seat::new(Outlet::new(server), true);
        // More than the socket buffers hold while nobody reads.
        let round: Bytes = (0..8 * 1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        seat.park(0);
        let mut from_0 = |cursor: u64| (cursor == 0).then(|| round.clone());
        assert!(seat.offer(1, false, &mut from_0));
        assert!(woken(&seat).await, "the session must flush what was kept");
        assert_eq!(seat.unpark(), 1);
        assert_eq!(seat.outlet.state(), Wrote::Kept);
        // A later write queues behind the kept bytes.
        assert_eq!(seat.outlet.write(Bytes::from_static(b"next")), Wrote::Kept);
        let reading = tokio::spawn(async move {
            let mut received = vec![0u8; round.len() + 4];
            client.read_exact(&mut received).await.unwrap();
            assert_eq!(&received[..round.len()], &round[..]);
            assert_eq!(&received[round.len()..], b"next");
        });
        seat.outlet.flush().await.unwrap();
        reading.await.unwrap();
        assert_eq!(seat.outlet.state(), Wrote::All);
    }
}
