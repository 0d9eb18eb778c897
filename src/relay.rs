//! The command phase: after authentication, bytes are copied both ways at
//! once, unparsed, until either side closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// Copies both ways until either side closes or fails.
pub async fn relay<C, B>(client: &mut C, backend: &mut B) -> (Finished, Transferred)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut c = Watched::new(client);
    let mut b = Watched::new(backend);
    let res = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, RELAY_BUF, RELAY_BUF).await;
    let t = Transferred {
        up: c.read,
        down: c.written,
    };
    let finished = match res {
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

/// Counts bytes and remembers whether this side produced an I/O error.
struct Watched<'a, S: ?Sized> {
    inner: &'a mut S,
    read: u64,
    written: u64,
    failed: bool,
}

impl<'a, S: ?Sized> Watched<'a, S> {
    fn new(inner: &'a mut S) -> Self {
        Watched {
            inner,
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
            self.read += (buf.filled().len() - before) as u64;
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
        self.note(r)
    }
}
