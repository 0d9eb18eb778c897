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

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::outcome::{Fault, Finished};

/// Relay buffer size per direction. 16 KiB matches the largest TLS record
/// plaintext, so one read from the TLS side fills at most one buffer.
pub const RELAY_BUF: usize = 16 * 1024;

/// Byte counts of a finished relay.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transferred {
    /// Client → backend.
    pub up: u64,
    /// Backend → client.
    pub down: u64,
}

/// Copies both ways until either side closes or fails, or, with `idle`
/// set, until no byte has come from either side for that long.
pub async fn relay<C, B>(
    client: &mut C,
    backend: &mut B,
    idle: Option<Duration>,
) -> (Finished, Transferred)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity::new(idle.is_some());
    // Shutting down the client's side is what the copy does once the
    // backend has closed and its last bytes are passed on.
    let mut c = Watched::new(client, &activity, true);
    let mut b = Watched::new(backend, &activity, false);
    let idle_timer = async {
        match idle {
            Some(limit) => activity.quiet_for(limit).await,
            None => std::future::pending().await,
        }
    };
    let res = tokio::select! {
        biased;
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, RELAY_BUF, RELAY_BUF) => r.map(|_| ()),
        _ = activity.backend_done.notified() => Ok(()),
        _ = idle_timer => Err(io::Error::new(io::ErrorKind::TimedOut, IdleTimedOut)),
    };
    let t = Transferred {
        up: c.read,
        down: c.written,
    };
    let finished = match res {
        Err(e) if e.get_ref().is_some_and(|i| i.is::<IdleTimedOut>()) => Finished::IdleTimeout {
            after: idle.unwrap_or_default(),
        },
        Ok(_) => Finished::Relayed,
        // A peer that goes away without a clean close is normal for database
        // clients (pools are killed, laptops sleep): count it, but as relayed.
        Err(e) if is_disconnect(&e) => Finished::Relayed,
        Err(error) => Finished::RelayError {
            fault: if b.failed {
                Fault::Backend
            } else {
                Fault::Client
            },
            error,
        },
    };
    (finished, t)
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

/// Marker inside the `io::Error` that ends a relay on idle timeout, so it
/// cannot be mistaken for a real `TimedOut` from a socket.
#[derive(Debug, thiserror::Error)]
#[error("idle timeout")]
struct IdleTimedOut;

/// What both directions (polled from one task) note through a shared
/// reference: when either side last delivered bytes (milliseconds since
/// `start`), and that the backend → client direction has finished.
struct Activity {
    start: Instant,
    /// Whether anyone waits on `last_ms` (an idle timeout is set); if not,
    /// reads skip the clock.
    timed: bool,
    last_ms: AtomicU64,
    backend_done: Notify,
}

impl Activity {
    fn new(timed: bool) -> Self {
        Activity {
            start: Instant::now(),
            timed,
            last_ms: AtomicU64::new(0),
            backend_done: Notify::new(),
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

/// Counts bytes, notes activity, and remembers whether this side produced
/// an I/O error.
struct Watched<'a, S: ?Sized> {
    inner: &'a mut S,
    activity: &'a Activity,
    /// The client's side: a finished shutdown means the backend is done.
    shutdown_ends_relay: bool,
    read: u64,
    written: u64,
    failed: bool,
}

impl<'a, S: ?Sized> Watched<'a, S> {
    fn new(inner: &'a mut S, activity: &'a Activity, shutdown_ends_relay: bool) -> Self {
        Watched {
            inner,
            activity,
            shutdown_ends_relay,
            read: 0,
            written: 0,
            failed: false,
        }
    }
    fn note<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.failed = true;
        }
        r
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = buf.filled().len() - before;
            if n > 0 {
                self.read += n as u64;
                self.activity.touch();
            }
        }
        self.note(r)
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written += *n as u64;
        }
        self.note(r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.inner).poll_flush(cx);
        self.note(r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.inner).poll_shutdown(cx);
        if self.shutdown_ends_relay && r.is_ready() {
            self.activity.backend_done.notify_one();
        }
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// With the clock paused, time only moves when every task waits, so
    /// the deadlines below are exact.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_byte_either_way() {
        let (mut client, mut proxy_client) = duplex(1024);
        let (mut proxy_backend, mut backend) = duplex(1024);
        let start = Instant::now();
        let relay = tokio::spawn(async move {
            let r = relay(
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
            tokio::spawn(async move { relay(&mut proxy_client, &mut proxy_backend, None).await });
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
            tokio::spawn(async move { relay(&mut proxy_client, &mut proxy_backend, None).await });
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
            tokio::spawn(async move { relay(&mut proxy_client, &mut proxy_backend, None).await });
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
