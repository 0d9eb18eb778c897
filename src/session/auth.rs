//! The backend's side of the connection phase: connecting and reading its
//! greeting, the outbound TLS upgrade (`[backend.tls]`), and relaying
//! authentication between the two legs with the sequence-id shift
//! (docs/design.md §3.4) until the backend's OK or ERR, the OK edited on
//! its way ([`OkEdit`]: the `redirect_url` form of the failover redirect).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::either::Either;

use super::{door, ClientIo, ClientStream};
use crate::backend::{self, BackendRuntime, BackendStream};
use crate::listener::ListenerRuntime;
use crate::outcome::{SessionError, Stage};
use crate::packet_io::{write_own_packet, Packet, PacketReader, ReadError};
use crate::protocol::err::OK_HEADER;
use crate::protocol::ok::{edit_auth_ok, AuthOkEdit};
use crate::protocol::response::{self, HandshakeResponse};
use crate::protocol::{Capabilities, ErrPacket, Greeting, GreetingTemplate, ERR_HEADER, MAX_CHUNK};
use crate::tls::{self, Peer, TlsFailure};

/// The backend stream after the optional outbound TLS upgrade.
pub(super) type BackendConn =
    Either<BackendStream, Box<tokio_rustls::client::TlsStream<BackendStream>>>;

/// How authentication at the backend ended.
pub(super) enum AuthEnd {
    /// The backend's OK was passed on: the command phase starts.
    /// `redirected`: it carried the `redirect_url` of [`OkEdit`].
    Ok { redirected: bool },
    /// The backend's ERR (code) was passed on.
    Rejected { code: u16 },
}

/// Connects to the listener's backend and reads its first packet (the
/// greeting, or an ERR such as "Too many connections"), all within the
/// backend's connect timeout: a server that accepts but never greets is as
/// unavailable as one that refuses.
pub(super) async fn backend_greeting(
    target: &BackendRuntime,
    origin: backend::Origin,
    limit: usize,
) -> Result<(BackendStream, PacketReader, Packet), SessionError> {
    let cfg = &target.config;
    let greet = async {
        let mut backend = backend::connect(cfg, origin).await?;
        let mut reader = PacketReader::new();
        let greeting = reader
            .read(&mut backend, limit)
            .await
            .map_err(SessionError::from_backend_read)?;
        Ok((backend, reader, greeting))
    };
    match tokio::time::timeout(cfg.connect_timeout, greet).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::BackendUnavailable(
            backend::ConnectError::NoGreeting {
                addr: cfg.address.to_string(),
                timeout: cfg.connect_timeout,
            },
        )),
    }
}

/// Dials the backend and reads its greeting (learning it for the next
/// clients' greetings). A backend that answers with an ERR instead ("Too
/// many connections", "Host is blocked") is refused with its own code and
/// message, which the client gets over its TLS (docs/design.md §3.6).
pub(super) async fn greet(
    target: &BackendRuntime,
    origin: backend::Origin,
    limit: usize,
) -> Result<(BackendStream, PacketReader, Greeting, GreetingTemplate), SessionError> {
    let (backend, reader, packet) = backend_greeting(target, origin, limit).await?;
    let payload = packet.payload();
    if payload.first() == Some(&ERR_HEADER) {
        let e =
            ErrPacket::parse(payload).map_err(|e| SessionError::BackendProtocol(e.to_string()))?;
        return Err(SessionError::BackendRefused {
            code: e.code,
            sql_state: e.sql_state,
            message: e.message,
        });
    }
    let greeting = Greeting::parse(payload)
        .map_err(|e| SessionError::BackendProtocol(format!("bad greeting: {e}")))?;
    let template = GreetingTemplate::learn(&greeting, payload)
        .map_err(|e| SessionError::BackendProtocol(format!("bad greeting: {e}")))?;
    target.learn_greeting(template.clone());
    Ok((backend, reader, greeting, template))
}

/// Whether the backend has every capability the client agreed on that
/// shapes the command phase's bytes. The client was greeted with `offered`
/// (what portcullis last learned of this backend); a backend restarted as
/// another version since may lack some, and the client must then reconnect
/// (and is greeted as the backend is now). Bits a client sets that nobody
/// offered (mysql2 sets MySQL 8's on every server) are the server's to
/// ignore, as it does.
pub(super) fn compatible(
    response: &HandshakeResponse,
    offered: &GreetingTemplate,
    backend: &GreetingTemplate,
) -> Result<(), SessionError> {
    let agreed = response.capabilities.0 & offered.capabilities.0;
    let missing = agreed & Capabilities::PROTOCOL_SHAPING & !backend.capabilities.0;
    let missing_extended = response.extended & offered.extended & !backend.extended;
    if missing != 0 || missing_extended != 0 {
        return Err(SessionError::BackendCapabilities {
            missing: missing | missing_extended,
        });
    }
    Ok(())
}

/// With `[backend.tls]`: sends the SSLRequest (the response's fixed prefix
/// with CLIENT_SSL, sequence id 1 right after the greeting) and runs TLS
/// with the backend, which must offer it: there is no plaintext fallback.
/// Without, the stream as it is.
pub(super) async fn outbound_tls(
    backend: BackendStream,
    reader: &mut PacketReader,
    target: &BackendRuntime,
    backend_offers_tls: bool,
    response: &[u8],
) -> Result<BackendConn, SessionError> {
    let Some(tls) = target.tls.as_ref().map(|t| t.load()) else {
        return Ok(Either::Left(backend));
    };
    if !backend_offers_tls {
        return Err(SessionError::BackendTlsRefused);
    }
    if !reader.take_leftover().is_empty() {
        return Err(SessionError::BackendProtocol(
            "backend sent data before the SSLRequest".into(),
        ));
    }
    Ok(Either::Right(Box::new(
        backend_upgrade(backend, response, &tls).await?,
    )))
}

/// Sends the SSLRequest built from the client's response and runs TLS with
/// the backend.
async fn backend_upgrade(
    mut backend: BackendStream,
    response: &[u8],
    tls: &tls::ClientTls,
) -> Result<tokio_rustls::client::TlsStream<BackendStream>, SessionError> {
    let mut request = response
        .get(..response::SSL_REQUEST_LEN)
        .ok_or_else(|| SessionError::ClientProtocol("handshake response too short".into()))?
        .to_vec();
    response::set_ssl(&mut request, true);
    write_own_packet(&mut backend, 1, &request)
        .await
        .map_err(SessionError::BackendIo)?;
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), backend)
        .await
        .map_err(|source| backend_read_error(ReadError::Io(source)))
}

/// Maps a backend read failure; a TLS error (an alert from the backend,
/// e.g. refusing our client certificate) becomes [`SessionError::BackendTls`].
fn backend_read_error(e: ReadError) -> SessionError {
    match e {
        ReadError::Io(source)
            if source
                .get_ref()
                .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some()) =>
        {
            SessionError::BackendTls {
                reason: TlsFailure::from_io(&source, Peer::Backend),
                source,
            }
        }
        e => SessionError::from_backend_read(e),
    }
}

/// What portcullis changes in the backend's OK that ends authentication
/// (docs/failover.md): the `redirect_url` form's tracker added, the
/// backend's own `redirect_url` renamed.
#[derive(Debug, Clone, Default)]
pub(super) struct OkEdit {
    /// Whether client and backend agreed on CLIENT_SESSION_TRACK: without
    /// it the OK has no session-state block, and none can be added.
    pub session_track: bool,
    /// `mariadb://host:port` to add.
    pub redirect_url: Option<String>,
    /// Rename a backend's own `redirect_url` (unless
    /// `pass_backend_redirect`; always when one is added).
    pub rename_backend_redirect: bool,
}

impl OkEdit {
    /// The OK payload to send instead of `payload`, or `None` to pass it as
    /// it is. An OK that does not parse passes as it is (logged): the
    /// client then has its session without the tracker.
    fn apply(&self, payload: &[u8], listener: &str, backend: &str) -> Option<Vec<u8>> {
        let edit = AuthOkEdit {
            redirect_url: self.redirect_url.as_deref(),
            rename_backend_redirect: self.rename_backend_redirect || self.redirect_url.is_some(),
        };
        if self.redirect_url.is_some() && !self.session_track {
            tracing::warn!(
                listener,
                backend,
                "the backend did not agree on session tracking: the client cannot be told redirect_url and stays on this server"
            );
        }
        match edit_auth_ok(payload, self.session_track, &edit) {
            Ok(Some(p)) if p.len() < MAX_CHUNK => Some(p),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(listener, backend, error = %e, "the backend's OK does not parse: passed on unchanged");
                None
            }
        }
    }
}

/// The two legs of the authentication exchange and how their sequence ids
/// relate (docs/design.md §3.4).
pub(super) struct AuthRelay<'a, S: ClientIo> {
    pub client: &'a mut ClientStream<S>,
    pub client_reader: &'a mut PacketReader,
    pub backend: &'a mut BackendConn,
    pub backend_reader: &'a mut PacketReader,
    pub listener: &'a ListenerRuntime,
    pub target: &'a BackendRuntime,
    /// Applied to the OK that ends authentication.
    pub ok_edit: OkEdit,
}

impl<S: ClientIo> AuthRelay<'_, S> {
    /// Relays the HandshakeResponse `resp` with CLIENT_SSL as the backend
    /// leg is (a set bit on a plaintext leg would make the server start a
    /// TLS accept), then every auth round trip until the backend's OK or ERR,
    /// which is passed on too.
    pub(super) async fn run(mut self, mut resp: Packet) -> Result<AuthEnd, SessionError> {
        let client_tls = matches!(self.client, Either::Right(_));
        let backend_tls = matches!(self.backend, Either::Right(_));
        let limit = self.listener.config.max_handshake_packet;
        let to_backend = |seq: u8| {
            seq.wrapping_add(u8::from(backend_tls))
                .wrapping_sub(u8::from(client_tls))
        };
        let to_client = |seq: u8| {
            seq.wrapping_add(u8::from(client_tls))
                .wrapping_sub(u8::from(backend_tls))
        };
        response::set_ssl(resp.payload_mut(), backend_tls);
        // The sequence id the client expects next from us, for an ERR of our
        // own if the backend fails half-way through authentication.
        let mut next_to_client = resp.header.seq.wrapping_add(1);
        resp.set_seq(to_backend(resp.header.seq));
        if let Err(e) = self.backend.write_all(&resp.bytes).await {
            return Err(self.fail(next_to_client, SessionError::BackendIo(e)).await);
        }
        let mut backend_continues = false;
        // Whether the backend asked (an auth switch, more data) and the
        // client has not answered yet. The client is read only then: what it
        // sends unasked — a command pipelined behind its answer, say a
        // COM_CHANGE_USER to a user the door refuses — is not taken for auth
        // data and relayed unchecked, but stays buffered for the command
        // phase, where the relay inspects it.
        let mut asked = false;
        loop {
            enum Ev {
                Client(Result<Packet, ReadError>),
                Backend(Result<Packet, ReadError>),
            }
            let ev = tokio::select! {
                r = self.client_reader.read(self.client, limit), if asked => Ev::Client(r),
                r = self.backend_reader.read(self.backend, limit) => Ev::Backend(r),
            };
            match ev {
                Ev::Client(r) => {
                    let mut p = match r {
                        Ok(p) => p,
                        Err(e) => {
                            let listener = self.listener;
                            return Err(door::client_failed(
                                self.client,
                                listener,
                                next_to_client,
                                e,
                            )
                            .await);
                        }
                    };
                    // An answer follows what it answers (a packet that
                    // is not one: Bad handshake).
                    if p.header.seq != next_to_client {
                        let e = SessionError::ClientProtocol(format!(
                            "authentication packet has sequence id {}, expected {next_to_client}",
                            p.header.seq
                        ));
                        let seq = p.header.seq.wrapping_add(1);
                        return Err(door::bad_handshake(self.client, self.listener, seq, e).await);
                    }
                    // The rest of a packet over 16 MiB is still owed.
                    asked = p.header.continues();
                    next_to_client = p.header.seq.wrapping_add(1);
                    p.set_seq(to_backend(p.header.seq));
                    if let Err(e) = self.backend.write_all(&p.bytes).await {
                        return Err(self.fail(next_to_client, SessionError::BackendIo(e)).await);
                    }
                }
                Ev::Backend(r) => {
                    let mut p = match r {
                        Ok(p) => p,
                        Err(e) => {
                            return Err(self.fail(next_to_client, backend_read_error(e)).await)
                        }
                    };
                    // During authentication the server sends OK (00), ERR
                    // (ff), auth switch (fe) or more data (01); a packet that
                    // continues a 16 MiB chunk starts with payload bytes, not
                    // a type.
                    let kind = if backend_continues {
                        None
                    } else {
                        p.payload().first().copied()
                    };
                    backend_continues = p.header.continues();
                    // A whole packet that does not end authentication
                    // asks the client for an answer.
                    asked = !backend_continues;
                    p.set_seq(to_client(p.header.seq));
                    next_to_client = p.header.seq.wrapping_add(1);
                    let mut redirected = false;
                    if kind == Some(OK_HEADER) && !backend_continues {
                        let edited = self.ok_edit.apply(
                            p.payload(),
                            &self.listener.config.name,
                            &self.target.config.name,
                        );
                        if let Some(payload) = edited {
                            redirected = self.ok_edit.redirect_url.is_some();
                            p = Packet::new(p.header.seq, &payload);
                        }
                    }
                    self.client
                        .write_all(&p.bytes)
                        .await
                        .map_err(SessionError::ClientIo)?;
                    self.client.flush().await.map_err(SessionError::ClientIo)?;
                    match kind {
                        Some(OK_HEADER) => return Ok(AuthEnd::Ok { redirected }),
                        Some(ERR_HEADER) => {
                            let code = ErrPacket::parse(p.payload()).map(|e| e.code).unwrap_or(0);
                            return Ok(AuthEnd::Rejected { code });
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The backend failed half-way through authentication (`e`): tells the
    /// client at sequence id `seq` (the TLS failure, or "failed during
    /// authentication"), closes, and hands `e` back for the log. With TLS
    /// 1.3 the backend judges our certificate after our side of the
    /// handshake is done, so its alert comes with the first read here.
    async fn fail(&mut self, seq: u8, e: SessionError) -> SessionError {
        let stage = Stage::Authentication(&self.target.config.name);
        if let Some(err) = e.client_err(&self.listener.config, &stage) {
            let _ = write_own_packet(self.client, seq, &err.encode()).await;
        }
        let _ = self.client.shutdown().await;
        e
    }
}

/// Writes `e`'s ERR for `stage` to a client that waits for one, best
/// effort, and closes its side.
pub(super) async fn tell_client<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    listener: &ListenerRuntime,
    seq: u8,
    e: &SessionError,
    stage: &Stage<'_>,
) {
    if let Some(err) = e.client_err(&listener.config, stage) {
        let _ = write_own_packet(client, seq, &err.encode()).await;
    }
    let _ = client.shutdown().await;
}
