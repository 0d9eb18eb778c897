//! The command phase: after authentication, bytes are copied both ways at
//! once until the backend's side is done or either side fails (or, with an
//! idle timeout, until neither side has sent a byte for that long).
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
//!
//! # Command inspection
//!
//! Without [`Inspect`] the bytes are not parsed at all. With it, the client
//! → backend direction follows the packet framing across reads
//! ([`CommandFraming`]: where commands start, docs in
//! `protocol::command`) and stops at every COM_CHANGE_USER:
//! - bytes read before it are written first; the packet itself is held
//!   (copied into a buffer of the session's, the only copy this makes) until
//!   all of it has arrived, at most [`Inspect::max_packet`] bytes of
//!   payload (more ends the relay with [`Finished::ChangeUserTooLarge`] as
//!   soon as a header announces it); bytes read behind it wait behind it;
//! - the policy then sees it parsed ([`ChangeUser`]) and answers: forward it
//!   as it is, send a rewritten payload instead (same sequence id), or
//!   refuse it: it is never sent, and the relay ends with
//!   [`Finished::ChangeUserRefused`]. A COM_CHANGE_USER that does not parse
//!   is refused without asking the policy: a packet whose user cannot be
//!   read with certainty must not reach the server;
//! - every other byte flows as without inspection, from the thread's buffer,
//!   never copied; the cost is one header decode per packet. A packet header
//!   cut by the end of a read (at most 4 bytes) is kept back and passed in
//!   front of the next read, since it may start a COM_CHANGE_USER;
//! - a client that closes in the middle of a held COM_CHANGE_USER: what it
//!   sent of it is dropped, the backend's side is shut down as usual.
//!
//! After a refusal (or an oversized COM_CHANGE_USER) the caller writes an
//! ERR to the client and closes. So that the ERR does not land in the middle
//! of an earlier answer, the relay returns only once everything read from
//! the backend has been written to the client and flushed, and what the
//! backend had already sent (whatever a read returns without waiting) has
//! been read and written too; the client's side is not shut down. What is
//! not guaranteed: an answer the backend has not sent yet to a command the
//! client pipelined before the COM_CHANGE_USER (the client may then read
//! the ERR as that command's answer; connectors send COM_CHANGE_USER only
//! on an idle connection, so this takes a client that pipelines it).
//!
//! Compressed connections (`CLIENT_COMPRESS`, zstd) carry compressed frames
//! instead of packets: commands cannot be found in them. A relay asked to
//! inspect one ends at once with a [`Finished::RelayError`] of portcullis's
//! own fault ([`Fault::Proxy`]): the session must not negotiate compression
//! where it inspects commands (the greeting does not offer it, and a
//! response that asks for it anyway is refused or has the flag cleared
//! before the backend sees it).

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
use crate::outcome::{Fault, Finished, SessionError};
use crate::protocol::command::{self, Extent, Scan};
use crate::protocol::{Capabilities, ChangeUser, CommandFraming, COM_CHANGE_USER};

/// Relay read size. 16 KiB matches the largest TLS record plaintext, so a
/// full read from the backend becomes one TLS record.
pub const RELAY_BUF: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every relay polled on this thread. Borrowed for
    /// the length of one poll only, never across an `.await`.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; RELAY_BUF]);
}

/// Decides, before the backend sees it, what becomes of a COM_CHANGE_USER.
/// Called on the session's task in the middle of a poll: it must answer at
/// once, without I/O.
pub trait CommandPolicy: Sync {
    fn change_user(&self, cu: &ChangeUser<'_>) -> Verdict;
}

/// A [`CommandPolicy`]'s answer.
#[derive(Debug)]
pub enum Verdict {
    /// Send the packet on as it came.
    Forward,
    /// Send this payload instead (e.g. from [`ChangeUser::rebuild`]), framed
    /// with the packet's own sequence id.
    Rewrite(Vec<u8>),
    /// Do not send it: the relay ends with
    /// [`Finished::ChangeUserRefused`] carrying this refusal, which the
    /// outcome table turns into the client's ERR, label and log.
    Refuse(SessionError),
}

/// Command inspection for one relay (module docs).
#[derive(Clone, Copy)]
pub struct Inspect<'a> {
    pub policy: &'a dyn CommandPolicy,
    /// The client's capabilities from its HandshakeResponse, as the backend
    /// got them: how a COM_CHANGE_USER is laid out, and whether the
    /// connection is compressed.
    pub capabilities: Capabilities,
    /// The largest COM_CHANGE_USER payload held (the listener's
    /// `max_handshake_packet`).
    pub max_packet: usize,
}

/// Copies both ways until the backend's side is done or either side fails,
/// or, with `idle` set, until no byte has come from either side for that
/// long. Every write is added to each of `meters` as it completes. With
/// `inspect`, every COM_CHANGE_USER goes to its policy first (module docs).
pub async fn relay<C, B>(
    client: &mut C,
    backend: &mut B,
    idle: Option<Duration>,
    meters: &[&ByteCounts],
    inspect: Option<Inspect<'_>>,
) -> Finished
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if inspect.is_some_and(|i| command::compressed(i.capabilities)) {
        return Finished::RelayError {
            fault: Fault::Proxy,
            error: io::Error::new(
                io::ErrorKind::Unsupported,
                "commands cannot be inspected on a compressed connection: the session must not negotiate compression where it inspects commands",
            ),
        };
    }
    let activity = Activity::new(idle.is_some());
    let mut up = Pump::new(Fault::Client, Fault::Backend, Direction::Up, meters);
    up.watch = inspect.map(Watch::new);
    let mut down = Pump::new(Fault::Backend, Fault::Client, Direction::Down, meters);
    // A refusal (or an oversized COM_CHANGE_USER) waiting for the backend →
    // client direction to deliver what it has.
    let mut stopped: Option<Stop> = None;
    let res = {
        let copy = poll_fn(|cx| {
            // The client → backend direction finishing (a half-close) does
            // not end the session: the backend's answer still flows.
            if stopped.is_none() {
                match up.poll(cx, client, backend, &activity) {
                    Poll::Ready(Err(e @ Stop::Io(..))) => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(stop)) => stopped = Some(stop),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            if stopped.is_some() {
                // Whatever goes wrong with the client now, the refusal is
                // what the session ended on.
                let _ = ready!(down.poll_drain(cx, backend, client, &activity));
                return match stopped.take() {
                    Some(stop) => Poll::Ready(Err(stop)),
                    None => Poll::Ready(Ok(())),
                };
            }
            down.poll(cx, backend, client, &activity)
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
        Err(Some(Stop::Io(_, e))) if is_disconnect(&e) => Finished::Relayed,
        Err(Some(Stop::Io(fault, error))) => Finished::RelayError { fault, error },
        Err(Some(Stop::Refused { user, refusal })) => Finished::ChangeUserRefused {
            user,
            refusal: Box::new(refusal),
        },
        Err(Some(Stop::TooLarge { limit })) => Finished::ChangeUserTooLarge { limit },
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

/// Why a direction stopped before its reader's end.
#[derive(Debug)]
enum Stop {
    /// Reading or writing failed; whose fault.
    Io(Fault, io::Error),
    /// The policy refused a COM_CHANGE_USER, or it did not parse.
    Refused { user: String, refusal: SessionError },
    /// A COM_CHANGE_USER over [`Inspect::max_packet`].
    TooLarge { limit: usize },
}

type PumpResult = Result<(), Stop>;

/// The client → backend direction's command inspection (module docs).
struct Watch<'p> {
    policy: &'p dyn CommandPolicy,
    caps: Capabilities,
    limit: usize,
    framing: CommandFraming,
    /// A header cut by the end of the last read, passed in front of the
    /// next one.
    carry: [u8; CommandFraming::MAX_SHORT],
    carry_len: usize,
    /// A COM_CHANGE_USER from its header on, and what was read behind it
    /// (empty, no allocation, while none is held).
    held: Vec<u8>,
    holding: bool,
    /// Bytes read behind a COM_CHANGE_USER that was let through, not yet
    /// scanned.
    unscanned: Vec<u8>,
}

impl<'p> Watch<'p> {
    fn new(i: Inspect<'p>) -> Self {
        Watch {
            policy: i.policy,
            caps: i.capabilities,
            limit: i.max_packet,
            framing: CommandFraming::new(),
            carry: [0; CommandFraming::MAX_SHORT],
            carry_len: 0,
            held: Vec::new(),
            holding: false,
            unscanned: Vec::new(),
        }
    }

    /// Scans `input` (after the carried bytes, which it starts with) and
    /// returns how much of it may be written now; what follows is held or
    /// carried.
    fn scan(&mut self, input: &[u8]) -> usize {
        self.carry_len = 0;
        match self.framing.scan(input, COM_CHANGE_USER) {
            Scan::Done => input.len(),
            Scan::Watched { at } => {
                self.held.extend_from_slice(&input[at..]);
                self.holding = true;
                at
            }
            Scan::Short { at } => {
                let tail = &input[at..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len();
                at
            }
        }
    }

    /// The held COM_CHANGE_USER's fate once all of it is there: the bytes
    /// to write for it (`None` while incomplete), or a stop.
    fn decide(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let too_large = Stop::TooLarge { limit: self.limit };
        let ext = command::extent(&self.held);
        let (len, last_seq) = match ext {
            Extent::Partial { declared } if declared > self.limit => return Err(too_large),
            Extent::Partial { .. } => return Ok(None),
            Extent::Complete { payload, .. } if payload > self.limit => return Err(too_large),
            Extent::Complete { len, last_seq, .. } => (len, last_seq),
        };
        let seq = self.held[3];
        let rewritten = {
            let Some(payload) = command::joined_payload(&self.held, ext) else {
                return Ok(None);
            };
            match ChangeUser::parse(&payload, self.caps) {
                Ok(cu) => match self.policy.change_user(&cu) {
                    Verdict::Forward => None,
                    Verdict::Rewrite(p) => Some(command::frame(&p, seq)),
                    Verdict::Refuse(refusal) => {
                        return Err(Stop::Refused {
                            user: cu.user_lossy().into_owned(),
                            refusal,
                        })
                    }
                },
                Err(e) => {
                    return Err(Stop::Refused {
                        user: command::user_of_malformed(&payload),
                        refusal: SessionError::ClientProtocol(e.to_string()),
                    })
                }
            }
        };
        let mut packet = std::mem::take(&mut self.held);
        self.unscanned = packet.split_off(len);
        self.holding = false;
        self.framing.after_packet(last_seq);
        Ok(Some(rewritten.unwrap_or(packet)))
    }
}

/// One direction of the relay.
struct Pump<'m, 'p> {
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
    /// Command inspection (client → backend only, with [`Inspect`]).
    watch: Option<Watch<'p>>,
}

impl<'m, 'p> Pump<'m, 'p> {
    fn new(
        reader: Fault,
        writer: Fault,
        direction: Direction,
        meters: &'m [&'m ByteCounts],
    ) -> Pump<'m, 'p> {
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
            watch: None,
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
            ready!(self.write_spill(cx, w))?;
            if let Some(watch) = &mut self.watch {
                if watch.holding {
                    if let Some(bytes) = watch.decide()? {
                        self.spill = bytes;
                        continue;
                    }
                } else if !watch.unscanned.is_empty() {
                    let mut input = std::mem::take(&mut watch.unscanned);
                    let pass = watch.scan(&input);
                    input.truncate(pass);
                    self.spill = input;
                    continue;
                }
            }
            if self.eof {
                let w_fault = self.writer;
                ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(|e| Stop::Io(w_fault, e))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.read_and_write(cx, r, w, activity) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    if self.need_flush {
                        let w_fault = self.writer;
                        if let Poll::Ready(r) = Pin::new(&mut *w).poll_flush(cx) {
                            r.map_err(|e| Stop::Io(w_fault, e))?;
                            self.need_flush = false;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes what is left in the spill buffer; gives its memory back once
    /// it is empty (idle sessions keep none).
    fn write_spill<W>(&mut self, cx: &mut Context<'_>, w: &mut W) -> Poll<PumpResult>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while self.spill_pos < self.spill.len() {
            let n = ready!(self.write(cx, w, SpillOrBuf::Spill))?;
            self.spill_pos += n;
        }
        if self.spill.capacity() > 0 {
            self.spill = Vec::new();
            self.spill_pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything this direction holds and whatever its reader has
    /// ready now (without waiting for more), and flushes. Never shuts the
    /// writer down: the caller writes to it next.
    fn poll_drain<R, W>(
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
        loop {
            ready!(self.write_spill(cx, w))?;
            if self.eof || self.done {
                break;
            }
            match self.read_and_write(cx, r, w, activity) {
                Poll::Ready(r) => r?,
                Poll::Pending => break,
            }
        }
        let w_fault = self.writer;
        ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(|e| Stop::Io(w_fault, e))?;
        self.need_flush = false;
        Poll::Ready(Ok(()))
    }

    /// Reads once into the thread's buffer and writes as much as the writer
    /// takes; keeps the rest in the spill buffer. With inspection, writes
    /// only up to a COM_CHANGE_USER (held) or a cut header (carried).
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
            // A carried header goes in front of what is read now.
            let carried = match &self.watch {
                Some(watch) => {
                    buf[..watch.carry_len].copy_from_slice(&watch.carry[..watch.carry_len]);
                    watch.carry_len
                }
                None => 0,
            };
            let mut rb = ReadBuf::new(&mut buf[carried..]);
            let r_fault = self.reader;
            ready!(Pin::new(&mut *r).poll_read(cx, &mut rb)).map_err(|e| Stop::Io(r_fault, e))?;
            let got = rb.filled().len();
            if got == 0 {
                self.eof = true;
                if let Some(watch) = &mut self.watch {
                    // A header cut by the close goes on as it would have
                    // without inspection; a held COM_CHANGE_USER never does.
                    self.spill.extend_from_slice(&buf[..carried]);
                    watch.carry_len = 0;
                    watch.held = Vec::new();
                    watch.holding = false;
                }
                return Poll::Ready(Ok(()));
            }
            activity.touch();
            let n = carried + got;
            let pass = match &mut self.watch {
                None => n,
                Some(watch) if watch.holding => {
                    watch.held.extend_from_slice(&buf[..n]);
                    0
                }
                Some(watch) => watch.scan(&buf[..n]),
            };
            let mut pos = 0;
            while pos < pass {
                match self.write(cx, w, SpillOrBuf::Buf(&buf[pos..pass])) {
                    Poll::Ready(Ok(k)) => pos += k,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.spill.extend_from_slice(&buf[pos..pass]);
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
    ) -> Poll<Result<usize, Stop>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let bytes = match what {
            SpillOrBuf::Spill => &self.spill[self.spill_pos..],
            SpillOrBuf::Buf(b) => b,
        };
        let w_fault = self.writer;
        let n =
            ready!(Pin::new(&mut *w).poll_write(cx, bytes)).map_err(|e| Stop::Io(w_fault, e))?;
        if n == 0 {
            return Poll::Ready(Err(Stop::Io(
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
        let finished = relay(client, backend, idle, &[&bytes], None).await;
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
            relay(
                &mut proxy_client,
                &mut proxy_backend,
                None,
                &[&*s2, &*t2],
                None,
            )
            .await
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

    // --- command inspection ------------------------------------------------

    use crate::protocol::command::tests::{hex, CAPTURED};
    use crate::protocol::command::{frame, CommandFraming};
    use crate::protocol::MAX_CHUNK;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::io::DuplexStream;

    /// The client of the captures: libmariadb 3.3.20's HandshakeResponse
    /// capabilities.
    const CAPS: Capabilities = Capabilities(0x00be_a28c);
    const LIMIT: usize = 16 * 1024;

    /// libmariadb's COM_CHANGE_USER to `u2` (protocol::command captures).
    fn change_user() -> Vec<u8> {
        assert_eq!(CAPTURED[0].1, CAPS.0);
        hex(CAPTURED[0].2)
    }

    /// The same COM_CHANGE_USER naming another user.
    fn change_user_to(user: &[u8]) -> Vec<u8> {
        let p = change_user();
        let cu = ChangeUser::parse(&p, CAPS).unwrap();
        ChangeUser { user, ..cu }.encode(CAPS).unwrap()
    }

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        frame(payload, seq)
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        pkt(0, &p)
    }

    /// A policy that answers with `answer` and records every user it is
    /// asked about.
    struct Recorder {
        answer: fn(&ChangeUser<'_>) -> Verdict,
        seen: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn new(answer: fn(&ChangeUser<'_>) -> Verdict) -> Self {
            Recorder {
                answer,
                seen: Mutex::new(Vec::new()),
            }
        }
        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl CommandPolicy for Recorder {
        fn change_user(&self, cu: &ChangeUser<'_>) -> Verdict {
            self.seen.lock().unwrap().push(cu.user_lossy().into_owned());
            (self.answer)(cu)
        }
    }

    fn forward(_: &ChangeUser<'_>) -> Verdict {
        Verdict::Forward
    }

    fn refuse(_: &ChangeUser<'_>) -> Verdict {
        Verdict::Refuse(SessionError::ClientProtocol("not for you".into()))
    }

    fn inspect(policy: &Recorder, limit: usize) -> Option<Inspect<'_>> {
        Some(Inspect {
            policy,
            capabilities: CAPS,
            max_packet: limit,
        })
    }

    /// A client whose reads return `reads` one per read (a read never spans
    /// two of them), then whatever `rest` gives; writes go to `rest`.
    struct Scripted {
        reads: VecDeque<Vec<u8>>,
        /// How much of the front read was returned already.
        offset: usize,
        rest: DuplexStream,
    }

    impl Scripted {
        fn new(reads: Vec<Vec<u8>>, rest: DuplexStream) -> Self {
            Scripted {
                reads: reads.into_iter().filter(|r| !r.is_empty()).collect(),
                offset: 0,
                rest,
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = &mut *self;
            let Some(front) = this.reads.front() else {
                return Pin::new(&mut this.rest).poll_read(cx, buf);
            };
            let n = buf.remaining().min(front.len() - this.offset);
            buf.put_slice(&front[this.offset..this.offset + n]);
            this.offset += n;
            if this.offset == front.len() {
                this.reads.pop_front();
                this.offset = 0;
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.rest).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.rest).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.rest).poll_shutdown(cx)
        }
    }

    /// What one relay did with a scripted client.
    struct Run {
        finished: Finished,
        /// Everything the backend received.
        backend_got: Vec<u8>,
        counted: Transferred,
    }

    /// Relays `reads` (one per read; then the client's side stays open
    /// unless `then_eof`) to a backend that reads until its side is shut
    /// down or the relay has returned.
    async fn through(reads: Vec<Vec<u8>>, then_eof: bool, policy: &Recorder, limit: usize) -> Run {
        let (mut client_far, client_near) = duplex(1 << 16);
        if then_eof {
            client_far.shutdown().await.unwrap();
        }
        let mut client = Scripted::new(reads, client_near);
        let (mut proxy_backend, mut backend) = duplex(1 << 20);
        let backend_task = tokio::spawn(async move {
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            got
        });
        let bytes = ByteCounts::default();
        let finished = relay(
            &mut client,
            &mut proxy_backend,
            None,
            &[&bytes],
            inspect(policy, limit),
        )
        .await;
        drop(proxy_backend);
        drop(client_far);
        Run {
            finished,
            backend_got: backend_task.await.unwrap(),
            counted: bytes.snapshot(),
        }
    }

    fn assert_refused(f: &Finished, want_user: &str, want_reason: &str) {
        match f {
            Finished::ChangeUserRefused { user, refusal } => {
                let reason = match &**refusal {
                    SessionError::ClientProtocol(r) => r.as_str(),
                    other => panic!("expected a client protocol refusal, got {other:?}"),
                };
                assert_eq!((user.as_str(), reason), (want_user, want_reason));
            }
            other => panic!("expected ChangeUserRefused, got {other:?}"),
        }
        assert_eq!(f.label(), "client_protocol_error");
    }

    /// A query, COM_CHANGE_USER, its auth-switch answer (seq 2), a ping.
    fn session_bytes() -> (Vec<u8>, usize) {
        let mut s = query("select 1");
        let at = s.len();
        s.extend(pkt(0, &change_user()));
        s.extend(pkt(2, &[0x5a; 20]));
        s.extend(pkt(0, b"\x0e"));
        (s, at)
    }

    #[tokio::test]
    async fn a_forwarded_change_user_passes_byte_exact_and_the_policy_sees_it() {
        let (s, _) = session_bytes();
        let policy = Recorder::new(forward);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        assert_eq!(run.backend_got, s);
        assert_eq!(policy.seen(), ["u2"]);
        assert_eq!(run.counted.up, s.len() as u64);
    }

    /// The stream cut into two reads at every offset (inside a header, at
    /// the first payload byte, inside the payload), then read byte by
    /// byte: the same packet is found each time, forwarded or refused.
    #[tokio::test]
    async fn the_change_user_is_found_whatever_the_reads_cut() {
        let (s, at) = session_bytes();
        let mut splits: Vec<Vec<Vec<u8>>> = (0..=s.len())
            .map(|cut| vec![s[..cut].to_vec(), s[cut..].to_vec()])
            .collect();
        splits.push(s.iter().map(|b| vec![*b]).collect());
        for reads in splits {
            let cuts: Vec<usize> = reads.iter().map(Vec::len).collect();
            let policy = Recorder::new(forward);
            let run = through(reads.clone(), true, &policy, LIMIT).await;
            assert!(matches!(run.finished, Finished::Relayed), "{cuts:?}");
            assert_eq!(run.backend_got, s, "{cuts:?}");
            assert_eq!(policy.seen(), ["u2"], "{cuts:?}");

            let policy = Recorder::new(refuse);
            let run = through(reads, true, &policy, LIMIT).await;
            assert_refused(&run.finished, "u2", "not for you");
            assert_eq!(run.backend_got, &s[..at], "{cuts:?}");
            assert_eq!(policy.seen(), ["u2"], "{cuts:?}");
        }
    }

    #[tokio::test]
    async fn a_rewritten_change_user_goes_on_with_its_sequence_id() {
        fn to_ed25519(cu: &ChangeUser<'_>) -> Verdict {
            Verdict::Rewrite(cu.rebuild(b"client_ed25519", &[0xab; 64], CAPS).unwrap())
        }
        let (s, at) = session_bytes();
        let policy = Recorder::new(to_ed25519);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        let original = change_user();
        let cu = ChangeUser::parse(&original, CAPS).unwrap();
        let rewritten = cu.rebuild(b"client_ed25519", &[0xab; 64], CAPS).unwrap();
        let mut want = s[..at].to_vec();
        want.extend(pkt(0, &rewritten));
        want.extend_from_slice(&s[at + 4 + original.len()..]);
        assert_eq!(run.backend_got, want);
        assert_eq!(run.counted.up, want.len() as u64);
    }

    /// Refused: the backend never sees the packet nor anything behind it,
    /// and the client's side is left open for the session's ERR.
    #[tokio::test]
    async fn a_refused_change_user_never_reaches_the_backend() {
        let (s, at) = session_bytes();
        let policy = Recorder::new(refuse);
        let (mut client_far, client_near) = duplex(1024);
        let mut client = Scripted::new(vec![s.clone()], client_near);
        let (mut proxy_backend, mut backend) = duplex(1 << 16);
        let bytes = ByteCounts::default();
        let finished = relay(
            &mut client,
            &mut proxy_backend,
            None,
            &[&bytes],
            inspect(&policy, LIMIT),
        )
        .await;
        assert_refused(&finished, "u2", "not for you");
        assert_eq!(
            bytes.snapshot(),
            Transferred {
                up: at as u64,
                down: 0
            }
        );
        drop(proxy_backend);
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, &s[..at]);
        // What the session does next: ERR at seq 1, then close.
        client.write_all(b"\x05\x00\x00\x01\xffERR!").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x05\x00\x00\x01\xffERR!");
    }

    /// Commands pipelined behind a COM_CHANGE_USER wait for its verdict
    /// and are inspected in turn.
    #[tokio::test]
    async fn pipelined_commands_wait_behind_a_change_user() {
        fn only_u2(cu: &ChangeUser<'_>) -> Verdict {
            if cu.user == b"u2" {
                Verdict::Forward
            } else {
                Verdict::Refuse(SessionError::ClientProtocol("only u2".into()))
            }
        }
        let mut s = pkt(0, &change_user());
        s.extend(query("select 2"));
        let second = s.len();
        s.extend(pkt(0, &change_user_to(b"other")));
        s.extend(pkt(0, b"\x0e"));
        s.extend(pkt(0, &change_user()));

        let policy = Recorder::new(forward);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        assert_eq!(run.backend_got, s);
        assert_eq!(policy.seen(), ["u2", "other", "u2"]);

        let policy = Recorder::new(only_u2);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert_refused(&run.finished, "other", "only u2");
        assert_eq!(run.backend_got, &s[..second]);
        assert_eq!(policy.seen(), ["u2", "other"]);
    }

    /// A 16 MiB query whose chunks carry 0x11 bytes, with a continuation
    /// chunk at seq 0 after 255: not a command. (The tracker does not check
    /// that chunk ids are consecutive, so the wrap a 256-chunk packet would
    /// need is staged with three chunks.)
    #[tokio::test]
    async fn continuation_chunks_that_wrap_to_seq_0_are_not_commands() {
        let mut s = vec![0xff, 0xff, 0xff, 0, 0x03];
        s.resize(4 + MAX_CHUNK, b'x');
        s.extend_from_slice(&[0xff, 0xff, 0xff, 255]);
        s.resize(s.len() + MAX_CHUNK, 0x11);
        s.extend(pkt(0, b"\x11\x11 and the end of the query"));
        let next = s.len();
        s.extend(pkt(0, &change_user()));
        let policy = Recorder::new(refuse);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert_refused(&run.finished, "u2", "not for you");
        assert_eq!(policy.seen(), ["u2"]);
        assert_eq!(run.backend_got.len(), next);
        assert!(run.backend_got == s[..next], "the query's bytes, unchanged");
    }

    /// LOAD DATA LOCAL INFILE: the file's packets (seq 2, 3, …, wrapping
    /// past 255 to 0) start with 0x11 and are not commands; the command
    /// after the file's empty last packet is.
    #[tokio::test]
    async fn local_infile_packets_are_not_commands() {
        let mut s = query("LOAD DATA LOCAL INFILE '/tmp/f' INTO TABLE t");
        let mut seq = 2u8;
        for _ in 0..600 {
            s.extend(pkt(seq, b"\x11\x00\x00,row\n"));
            seq = seq.wrapping_add(1);
        }
        s.extend(pkt(seq, b""));
        let next = s.len();
        s.extend(pkt(0, &change_user()));
        let policy = Recorder::new(refuse);
        let reads: Vec<Vec<u8>> = s.chunks(1000).map(<[u8]>::to_vec).collect();
        let run = through(reads, true, &policy, LIMIT).await;
        assert_refused(&run.finished, "u2", "not for you");
        assert_eq!(policy.seen(), ["u2"]);
        assert_eq!(run.backend_got, &s[..next]);
    }

    /// Over the limit: refused as soon as the header says so, without
    /// waiting for the rest (the client here never sends it). Exactly at
    /// the limit: forwarded.
    #[tokio::test]
    async fn a_change_user_over_the_limit_ends_the_relay() {
        let limit = 1024;
        let original = change_user();
        let big = |len: usize| {
            // Stretch the database name ("shop") to reach `len`.
            let db = vec![b'd'; len - original.len() + 4];
            let cu = ChangeUser::parse(&original, CAPS).unwrap();
            let p = ChangeUser {
                database: &db,
                ..cu
            }
            .encode(CAPS)
            .unwrap();
            assert_eq!(p.len(), len);
            p
        };
        let q = query("select 3");
        let mut s = q.clone();
        s.extend(pkt(0, &big(limit + 1))[..20].iter());
        let policy = Recorder::new(forward);
        let run = through(vec![s], false, &policy, limit).await;
        match run.finished {
            ref f @ Finished::ChangeUserTooLarge { limit: l } => {
                assert_eq!(l, limit);
                assert_eq!(f.label(), "client_packet_too_large");
            }
            other => panic!("expected ChangeUserTooLarge, got {other:?}"),
        }
        assert_eq!(run.backend_got, q);
        assert!(policy.seen().is_empty());

        let mut s = q.clone();
        s.extend(pkt(0, &big(limit)));
        let run = through(vec![s.clone()], true, &policy, limit).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        assert_eq!(run.backend_got, s);
        assert_eq!(policy.seen(), ["u2"]);
    }

    /// Before a refusal returns, everything the backend had sent is
    /// written to the client: the session's ERR comes after it, never in
    /// the middle of it.
    #[tokio::test]
    async fn the_backend_s_bytes_reach_the_client_before_a_refusal_returns() {
        let policy: &'static Recorder = Box::leak(Box::new(Recorder::new(refuse)));
        let (mut client, mut proxy_client) = duplex(512);
        let (mut proxy_backend, mut backend) = duplex(1 << 20);
        let result: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        backend.write_all(&result).await.unwrap();
        let relay = tokio::spawn(async move {
            let finished = relay(
                &mut proxy_client,
                &mut proxy_backend,
                None,
                &[],
                inspect(policy, LIMIT),
            )
            .await;
            // The session's ERR.
            proxy_client.write_all(b"ERR").await.unwrap();
            (finished, proxy_backend)
        });
        // The relay is delivering (a spill waits for this slow client)
        // when the COM_CHANGE_USER comes.
        let mut got = vec![0u8; 1];
        client.read_exact(&mut got).await.unwrap();
        client.write_all(&pkt(0, &change_user())).await.unwrap();
        let mut rest = vec![0u8; result.len() - 1 + 3];
        client.read_exact(&mut rest).await.unwrap();
        got.extend(rest);
        let (finished, _backend_side) = relay.await.unwrap();
        assert_refused(&finished, "u2", "not for you");
        let mut want = result.clone();
        want.extend_from_slice(b"ERR");
        assert!(got == want, "the backend's 100 000 bytes, then the ERR");
    }

    #[tokio::test]
    async fn a_client_closing_in_a_held_change_user_sends_none_of_it() {
        let q = query("select 4");
        let mut s = q.clone();
        s.extend_from_slice(&pkt(0, &change_user())[..30]);
        let policy = Recorder::new(forward);
        let run = through(vec![s], true, &policy, LIMIT).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        assert_eq!(run.backend_got, q);
        assert!(policy.seen().is_empty());
    }

    /// A header cut by the client's close goes on as without inspection.
    #[tokio::test]
    async fn a_header_cut_by_a_close_still_goes_on() {
        let q = query("select 5");
        let mut s = q.clone();
        s.extend_from_slice(&[9, 0, 0, 0]);
        let policy = Recorder::new(forward);
        let run = through(vec![s.clone()], true, &policy, LIMIT).await;
        assert!(
            matches!(run.finished, Finished::Relayed),
            "{:?}",
            run.finished
        );
        assert_eq!(run.backend_got, s);
        assert!(s.len() - q.len() <= CommandFraming::MAX_SHORT);
    }

    #[tokio::test]
    async fn a_malformed_change_user_is_refused_without_asking_the_policy() {
        let q = query("select 6");
        let mut s = q.clone();
        s.extend(pkt(0, b"\x11bob\0\x05ab"));
        let policy = Recorder::new(forward);
        let run = through(vec![s], true, &policy, LIMIT).await;
        assert_refused(
            &run.finished,
            "bob",
            "malformed COM_CHANGE_USER: length points past the end",
        );
        assert_eq!(run.backend_got, q);
        assert!(policy.seen().is_empty());
    }

    /// Compression hides the packets: asked to inspect them anyway, the
    /// relay ends at once, portcullis's fault, having forwarded nothing.
    #[tokio::test]
    async fn inspecting_a_compressed_connection_is_refused_at_once() {
        let policy = Recorder::new(forward);
        let (mut client, _client_far) = duplex(1024);
        let (mut proxy_backend, _backend) = duplex(1024);
        let bytes = ByteCounts::default();
        let finished = relay(
            &mut client,
            &mut proxy_backend,
            None,
            &[&bytes],
            Some(Inspect {
                policy: &policy,
                capabilities: Capabilities(CAPS.0 | Capabilities::COMPRESS),
                max_packet: LIMIT,
            }),
        )
        .await;
        assert_eq!(finished.label(), "relay_proxy_error");
        match finished {
            Finished::RelayError { fault, error } => {
                assert_eq!(fault, Fault::Proxy);
                assert_eq!(error.kind(), io::ErrorKind::Unsupported);
            }
            other => panic!("expected a proxy relay error, got {other:?}"),
        }
        assert_eq!(bytes.snapshot(), Transferred { up: 0, down: 0 });
    }
}
