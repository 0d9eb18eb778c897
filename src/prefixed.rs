//! A stream that first replays bytes already read from it.
//!
//! At a protocol switch (the end of the connection phase) a buffered packet
//! reader may have read past the last packet it returned: the first bytes of
//! the command phase. Those bytes are not written on by hand; the stream is
//! wrapped so that its next reads return them first, and whatever reads the
//! command phase (the relay) sees one unbroken byte stream — the way
//! linkerd2-proxy's `PrefixedIo` hands a peeked prefix to the next layer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` with `prefix` to be read before anything from `io` itself. Writes
/// go straight to `io`.
#[derive(Debug)]
pub struct PrefixedIo<S> {
    prefix: BytesMut,
    io: S,
}

impl<S> PrefixedIo<S> {
    pub fn new(prefix: BytesMut, io: S) -> PrefixedIo<S> {
        PrefixedIo { prefix, io }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Give the read-ahead buffer's memory back: idle sessions
                // keep none.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The prefix comes first, in reads as small as the caller's buffer,
    /// then the stream's own bytes; writes reach the stream untouched.
    #[tokio::test]
    async fn replays_the_prefix_then_reads_the_stream() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = PrefixedIo::new(BytesMut::from(&b"abcde"[..]), near);
        far.write_all(b"fgh").await.unwrap();
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"ab");
        let mut rest = [0u8; 6];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"cdefgh");
        s.write_all(b"up").await.unwrap();
        let mut got = [0u8; 2];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"up");
    }

    /// An empty prefix reads straight from the stream, EOF included.
    #[tokio::test]
    async fn an_empty_prefix_is_the_stream_itself() {
        let (near, far) = tokio::io::duplex(64);
        drop(far);
        let mut s = PrefixedIo::new(BytesMut::new(), near);
        let mut v = Vec::new();
        assert_eq!(s.read_to_end(&mut v).await.unwrap(), 0);
    }
}
