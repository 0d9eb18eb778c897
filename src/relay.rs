//! The command phase: after authentication, bytes are copied both ways at
//! once, unparsed, until the backend's side is done or either side fails
//! (or, with an idle timeout, until neither side has sent a byte for that
//! long).
//!
//! Half-closes: a client that closes its sending side (after COM_QUIT, or a
//! `shutdown(SHUT_WR)`) still gets everything the backend sends until the
//! backend closes. The reverse is not kept open: once the backend has closed
//! and everything it sent has been passed on and the client's side shut
//! down, the session ends, whether or not the client has noticed. A MySQL
//! server that closed is gone (a restart, a crash, a KILL), and a pooled
//! client that never reads would otherwise hold its slot until it next
//! writes.
//!
//! Each direction reads into one buffer per worker thread and writes the
//! bytes on within the same poll, so an idle session holds no relay buffer
//! at all (10 000 idle pooled connections would otherwise pin 2 × 16 KiB
//! each). Only when the writer cannot take everything (a slow peer, a full
//! socket) are the rest copied into the session's own spill buffer, and
//! nothing more is read from that side until the spill is written: memory
//! per session stays bounded by one read.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::{ByteCounts, Direction};
use crate::outcome::{Fault, Finished};

/// Relay read size. 16 KiB matches the largest TLS record plaintext, so a
/// full read from the backend becomes one TLS record.
pub const RELAY_BUF: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every relay polled on this thread. Borrowed for
    /// the length of one poll only, never across an `.await`.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; RELAY_BUF]);
}

/// Copies both ways until the backend's side is done or either side fails,
/// or, with `idle` set, until no byte has come from either side for that
/// long. Every write is added to each of `meters` as it completes.
pub async fn relay<C, B>(
    client: &mut C,
    backend: &mut B,
    idle: Option<Duration>,
    meters: &[&ByteCounts],
) -> Finished
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity::new(idle.is_some());
    let mut up = Pump::new(Fault::Client, Fault::Backend, Direction::Up, meters);
    let mut down = Pump::new(Fault::Backend, Fault::Client, Direction::Down, meters);
    let res = {
        let copy = poll_fn(|cx| {
            // The client → backend direction finishing (a half-close) does
            // not end the session: the backend's answer still flows.
            let _ = up.poll(cx, client, backend, &activity)?;
            if down.poll(cx, backend, client, &activity)?.is_ready() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        });
        let idle_timer = async {
            match idle {
                Some(limit) => activity.quiet_for(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = copy => r.map_err(Some),
            _ = idle_timer => Err(None),
        }
    };
    match res {
        Err(None) => Finished::IdleTimeout {
            after: idle.unwrap_or_default(),
        },
        // A peer that goes away without a clean close is normal for database
        // clients (pools are killed, laptops sleep): count it, but as relayed.
        Err(Some(e)) => match e {
            (_, e) if is_disconnect(&e) => Finished::Relayed,
            (fault, error) => Finished::RelayError { fault, error },
        },
        Ok(()) => Finished::Relayed,
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// When either side last delivered bytes (milliseconds since `start`), for
/// the idle timeout; both directions are polled from one task.
struct Activity {
    start: Instant,
    /// Whether anyone waits on `last_ms` (an idle timeout is set); if not,
    /// reads skip the clock.
    timed: bool,
    last_ms: AtomicU64,
}

impl Activity {
    fn new(timed: bool) -> Self {
        Activity {
            start: Instant::now(),
            timed,
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        if !self.timed {
            return;
        }
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has been read from either side for `limit`.
    async fn quiet_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

type PumpResult = Result<(), (Fault, io::Error)>;

/// One direction of the relay.
struct Pump<'m> {
    /// Who is at fault when reading / writing fails.
    reader: Fault,
    writer: Fault,
    /// Bytes read but not yet written; empty (no allocation) normally.
    spill: Vec<u8>,
    spill_pos: usize,
    need_flush: bool,
    eof: bool,
    done: bool,
    direction: Direction,
    meters: &'m [&'m ByteCounts],
}

impl<'m> Pump<'m> {
    fn new(
        reader: Fault,
        writer: Fault,
        direction: Direction,
        meters: &'m [&'m ByteCounts],
    ) -> Pump<'m> {
        Pump {
            reader,
            writer,
            spill: Vec::new(),
            spill_pos: 0,
            need_flush: false,
            eof: false,
            done: false,
            direction,
            meters,
        }
    }

    /// Ready(Ok) once the reader reached EOF and everything was written and
    /// the writer shut down; stays Ready after that.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        activity: &Activity,
    ) -> Poll<PumpResult>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.spill_pos < self.spill.len() {
                let n = ready!(self.write(cx, w, SpillOrBuf::Spill))?;
                self.spill_pos += n;
            }
            if !self.spill.is_empty() {
                // Drained: give the memory back, idle sessions keep none.
                self.spill = Vec::new();
                self.spill_pos = 0;
            }
            if self.eof {
                let w_fault = self.writer;
                ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(|e| (w_fault, e))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.read_and_write(cx, r, w, activity) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    if self.need_flush {
                        let w_fault = self.writer;
                        if let Poll::Ready(r) = Pin::new(&mut *w).poll_flush(cx) {
                            r.map_err(|e| (w_fault, e))?;
                            self.need_flush = false;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads once into the thread's buffer and writes as much as the writer
    /// takes; keeps the rest in the spill buffer.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        activity: &Activity,
    ) -> Poll<PumpResult>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        BUF.with(|cell| {
            // Never contended (one poll at a time per thread), but a second
            // borrow must not panic: fall back to a temporary buffer.
            let mut own;
            let mut borrowed = cell.try_borrow_mut();
            let buf: &mut [u8] = match &mut borrowed {
                Ok(b) => b,
                Err(_) => {
                    own = vec![0; RELAY_BUF];
                    &mut own
                }
            };
            let mut rb = ReadBuf::new(buf);
            let r_fault = self.reader;
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(|e| (r_fault, e))?;
            let n = rb.filled().len();
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            activity.touch();
            let mut pos = 0;
            while pos < n {
                match self.write(cx, w, SpillOrBuf::Buf(&buf[pos..n])) {
                    Poll::Ready(Ok(k)) => pos += k,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.spill.extend_from_slice(&buf[pos..n]);
                        break;
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
    }

    fn write<W>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        what: SpillOrBuf<'_>,
    ) -> Poll<Result<usize, (Fault, io::Error)>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let bytes = match what {
            SpillOrBuf::Spill => &self.spill[self.spill_pos..],
            SpillOrBuf::Buf(b) => b,
        };
        let w_fault = self.writer;
        let n = ready!(Pin::new(&mut *w).poll_write(cx, bytes)).map_err(|e| (w_fault, e))?;
        if n == 0 {
            return Poll::Ready(Err((
                w_fault,
                io::Error::new(io::ErrorKind::WriteZero, "write zero bytes"),
            )));
        }
        for m in self.meters {
            m.add(self.direction, n as u64);
        }
        self.need_flush = true;
        Poll::Ready(Ok(n))
    }
}

enum SpillOrBuf<'a> {
    Spill,
    Buf(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Transferred;
    use std::sync::Arc;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// `relay` with a meter of its own: the outcome and what it counted.
    async fn metered<C, B>(
        client: &mut C,
        backend: &mut B,
        idle: Option<Duration>,
    ) -> (Finished, Transferred)
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let bytes = ByteCounts::default();
        let finished = relay(client, backend, idle, &[&bytes]).await;
        (finished, bytes.snapshot())
    }

    /// The counts move while the relay runs (a replication stream shows in
    /// the listener's totals long before it ends), every meter gets them,
    /// and they stay when the relay is dropped from outside (a session
    /// ended for revocation).
    #[tokio::test]
    async fn counts_are_live_in_every_meter_and_survive_a_dropped_relay() {
        let (mut client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, mut backend) = duplex(1024);
        let session = Arc::new(ByteCounts::default());
        let totals = Arc::new(ByteCounts::default());
        totals.add(Direction::Up, 1000);
        let (s2, t2) = (session.clone(), totals.clone());
        let relay = tokio::spawn(async move {
            relay(&mut proxy_client, &mut proxy_backend, None, &[&*s2, &*t2]).await
        });
        client.write_all(b"query").await.unwrap();
        backend.read_exact(&mut [0u8; 5]).await.unwrap();
        backend.write_all(b"result!").await.unwrap();
        client.read_exact(&mut [0u8; 7]).await.unwrap();
        assert!(!relay.is_finished());
        assert_eq!(session.snapshot(), Transferred { up: 5, down: 7 });
        assert_eq!(totals.snapshot(), Transferred { up: 1005, down: 7 });
        relay.abort();
        assert!(relay.await.unwrap_err().is_cancelled());
        assert_eq!(session.snapshot(), Transferred { up: 5, down: 7 });
    }

    /// Small pipes and a slow reader force partial and pending writes:
    /// every byte still arrives, in order, both ways, and the counts match.
    #[tokio::test]
    async fn spills_and_preserves_bytes_under_backpressure() {
        let (client_far, mut client) = duplex(512);
        let (mut backend, mut backend_far) = duplex(300);
        let relay = tokio::spawn(async move { metered(&mut client, &mut backend, None).await });

        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        let (mut client_rd, mut client_wr) = tokio::io::split(client_far);
        let up2 = up.clone();
        tokio::spawn(async move {
            client_wr.write_all(&up2).await.unwrap();
            client_wr.shutdown().await.unwrap();
        });
        let down2 = down.clone();
        let backend_task = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 97];
            loop {
                let n = backend_far.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
            backend_far.write_all(&down2).await.unwrap();
            backend_far.shutdown().await.unwrap();
            got
        });
        let mut got_down = Vec::new();
        client_rd.read_to_end(&mut got_down).await.unwrap();
        let got_up = backend_task.await.unwrap();
        let (finished, t) = relay.await.unwrap();
        assert!(matches!(finished, Finished::Relayed), "{finished:?}");
        assert_eq!(got_up, up);
        assert_eq!(got_down, down);
        assert_eq!((t.up, t.down), (up.len() as u64, down.len() as u64));
    }

    /// A backend whose writes fail (not a disconnect).
    struct BrokenBackend;
    impl AsyncRead for BrokenBackend {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }
    impl AsyncWrite for BrokenBackend {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::Error::other("disk on fire")))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failing_write_is_the_writers_fault() {
        let (mut client_far, mut client) = duplex(1024);
        client_far.write_all(b"\x01\x00\x00\x00\x0e").await.unwrap();
        let (finished, t) = metered(&mut client, &mut BrokenBackend, None).await;
        match finished {
            Finished::RelayError { fault, error } => {
                assert_eq!(fault, Fault::Backend);
                assert_eq!(error.to_string(), "disk on fire");
            }
            other => panic!("expected a backend relay error, got {other:?}"),
        }
        // Read from the client, never delivered: not counted.
        assert_eq!(t.up, 0);
    }

    /// With the clock paused, time only moves when every task waits, so
    /// the deadlines below are exact.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_byte_either_way() {
        let (mut client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, mut backend) = duplex(1024);
        let start = Instant::now();
        let relay = tokio::spawn(async move {
            let r = metered(
                &mut proxy_client,
                &mut proxy_backend,
                Some(Duration::from_secs(10)),
            )
            .await;
            (r, Instant::now())
        });

        tokio::time::sleep(Duration::from_secs(6)).await;
        client.write_all(b"up").await.unwrap();
        let mut buf = [0u8; 2];
        backend.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        backend.write_all(b"down").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert!(!relay.is_finished(), "activity at 6 s and 12 s");

        let ((finished, t), ended) = relay.await.unwrap();
        assert!(
            matches!(finished, Finished::IdleTimeout { after } if after == Duration::from_secs(10)),
            "{finished:?}"
        );
        assert_eq!(
            ended - start,
            Duration::from_secs(22),
            "10 s after the last byte"
        );
        assert_eq!((t.up, t.down), (2, 4));
        // Both ends are closed once the relay is gone.
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);
        assert_eq!(backend.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_idle_timeout_a_quiet_relay_stays_open() {
        let (_client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, _backend) = duplex(1024);
        let relay =
            tokio::spawn(async move { metered(&mut proxy_client, &mut proxy_backend, None).await });
        tokio::time::sleep(Duration::from_secs(7 * 24 * 3600)).await;
        assert!(!relay.is_finished());
        relay.abort();
    }

    /// COM_QUIT and a half-close: the backend's last bytes still arrive.
    #[tokio::test]
    async fn a_client_half_close_still_gets_the_backend_s_answer() {
        let (mut client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, mut backend) = duplex(1024);
        let relay =
            tokio::spawn(async move { metered(&mut proxy_client, &mut proxy_backend, None).await });
        client.write_all(b"quit").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"quit", "the client's bytes, then EOF");
        backend.write_all(b"bye").await.unwrap();
        drop(backend);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        let (finished, t) = relay.await.unwrap();
        assert!(matches!(finished, Finished::Relayed), "{finished:?}");
        assert_eq!((t.up, t.down), (4, 3));
    }

    /// A backend that dies ends the session even if the client never reads
    /// or closes (a pooled connection).
    #[tokio::test]
    async fn a_closed_backend_ends_the_session_without_the_client() {
        let (mut client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, mut backend) = duplex(1024);
        let relay =
            tokio::spawn(async move { metered(&mut proxy_client, &mut proxy_backend, None).await });
        backend.write_all(b"partial result").await.unwrap();
        drop(backend);
        let (finished, t) = relay.await.unwrap();
        assert!(matches!(finished, Finished::Relayed), "{finished:?}");
        assert_eq!((t.up, t.down), (0, 14));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"partial result", "delivered before the close");
    }
}
