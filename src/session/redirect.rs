//! The failover redirect of one connection, in its two forms
//! (docs/failover.md): the ERR packet, answered without a backend, and
//! MariaDB's `redirect_url` session tracker, added to the backend's OK that
//! ends authentication ([`auth::OkEdit`]). Decided from the one snapshot of
//! the listener's settings taken at accept; the form per client once its
//! HandshakeResponse is read.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::auth::OkEdit;
use super::info::SessionInfo;
use super::route::redirect_target;
use super::{door, ClientIo, ClientStream};
use crate::failover::{ClientTraits, FailoverSettings, FailoverStyle, RedirectForm};
use crate::listener::ListenerRuntime;
use crate::outcome::{Finished, SessionError};
use crate::packet_io::write_own_packet;
use crate::protocol::{Capabilities, ErrPacket, HandshakeResponse};

/// What the failover settings mean for one connection.
pub(super) struct Plan {
    /// Set when the listener redirects this connection now.
    redirect: Option<Redirect>,
    /// Keep a backend's own `redirect_url` (`pass_backend_redirect`).
    pass_backend_redirect: bool,
}

/// Where a redirected connection is sent, and how.
pub(super) struct Redirect {
    /// `host:port`.
    pub target: String,
    /// The error form, to this target.
    pub packet: ErrPacket,
    settings: Arc<FailoverSettings>,
}

impl Plan {
    /// The plan for a connection of `listener` under `settings` (the
    /// snapshot taken at accept). `Err` says why a redirect has no target
    /// now (`"primary"` while none is known), for the client.
    pub fn new(
        listener: &ListenerRuntime,
        settings: Arc<FailoverSettings>,
    ) -> Result<Plan, String> {
        let mut plan = Plan {
            redirect: None,
            pass_backend_redirect: settings.pass_backend_redirect,
        };
        if !settings.applies(listener.is_unix(), listener.config.admin) {
            return Ok(plan);
        }
        let Some(target) = settings.target.clone() else {
            return Ok(plan);
        };
        let target = redirect_target(listener, target)?;
        plan.redirect = Some(Redirect {
            packet: settings.packet_to(&target),
            target,
            settings,
        });
        Ok(plan)
    }

    /// The redirect, when this connection is redirected.
    pub fn redirect(&self) -> Option<&Redirect> {
        self.redirect.as_ref()
    }

    /// The redirect when every client gets the error form
    /// (`failover_style = "error"`): answered before any backend.
    pub fn error_for_everyone(&self) -> Option<&Redirect> {
        self.redirect
            .as_ref()
            .filter(|r| r.settings.style == FailoverStyle::Error)
    }

    /// The redirect when this client, past the door, gets the error form.
    pub fn error_for(
        &self,
        response: &HandshakeResponse,
        payload: &[u8],
        client_tls: bool,
    ) -> Option<&Redirect> {
        let r = self.redirect.as_ref()?;
        let attributes = response.attributes(payload);
        let client = ClientTraits {
            session_track: response.capabilities.has(Capabilities::SESSION_TRACK),
            tls: client_tls,
            attributes: &attributes,
        };
        (r.settings.form_for(&client) == RedirectForm::Error).then_some(r)
    }

    /// What to change in the OK that ends authentication: the
    /// `redirect_url` when this connection is redirected (its form is
    /// `redirect_url` by now), the backend's own renamed unless kept.
    /// `session_track`: whether client and backend agreed on it.
    pub fn ok_edit(&self, session_track: bool) -> OkEdit {
        OkEdit {
            session_track,
            redirect_url: self
                .redirect
                .as_ref()
                .map(|r| crate::failover::redirect_url(&r.target)),
            rename_backend_redirect: !self.pass_backend_redirect,
        }
    }
}

/// The error form without a backend: portcullis's own greeting, TLS as the
/// listener requires, the ERR after the HandshakeResponse, close.
pub(super) async fn answer<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    r: &Redirect,
    deadline: Instant,
) -> Result<Finished, SessionError> {
    door::refuse(client, listener, info, &r.packet, deadline).await?;
    Ok(Finished::Redirected {
        target: r.target.clone(),
    })
}

/// The error form to a client past the door, which waits for its answer at
/// `seq`; then close.
pub(super) async fn tell<S: ClientIo>(
    client: &mut ClientStream<S>,
    seq: u8,
    r: &Redirect,
) -> Result<Finished, SessionError> {
    write_own_packet(client, seq, &r.packet.encode())
        .await
        .map_err(SessionError::ClientIo)?;
    let _ = client.shutdown().await;
    Ok(Finished::Redirected {
        target: r.target.clone(),
    })
}
