//! The admin HTTP API: health for keepalived, status, Prometheus metrics,
//! reload.
//!
//! It runs on its own single-threaded tokio runtime in a dedicated OS
//! thread, so a data path that saturates the main runtime cannot starve it,
//! and it reads the proxy only through [`ProxyState`] (atomics and
//! `ArcSwap` loads): nothing here can make a session wait.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `ok`, or 503 `{"error": reason}` (never needs a token) |
//! | `GET /status` | 200 JSON [`status::Status`] |
//! | `GET /metrics` | 200 OpenMetrics text |
//! | `GET /topology` | 200 JSON [`crate::monitor::TopologyStatus`] (404 without `[monitor]`) |
//! | `POST /primary`, `DELETE /primary` | pin the primary / return to the monitor |
//! | `POST /reload` | re-read the config and TLS material (as SIGHUP): 200 with a report, 422 if anything was not applied |
//!
//! With a token configured, every other request needs
//! `Authorization: Bearer <token>` (401 otherwise). Unknown paths get 404,
//! known paths with the wrong method 405; every error body is
//! `{"error": "..."}`.

pub mod client;
pub mod status;

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, Semaphore};

use crate::config::{AdminConfig, ListenAddr, TokenError};
use crate::metrics::METRICS_CONTENT_TYPE;
use crate::state::ProxyState;

pub use client::AdminTarget;
pub use status::Status;

/// Concurrent admin connections. Scrapers, keepalived and an operator need
/// a handful; the cap keeps a misbehaving client from piling up tasks.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on one admin connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("admin: cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("admin: cannot start its runtime: {0}")]
    Runtime(io::Error),
}

/// The running admin endpoint. Dropping it stops the server thread and
/// removes its Unix socket file.
pub struct AdminServer {
    addr: ListenAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum AdminListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

struct Ctx {
    state: Arc<ProxyState>,
    token: Option<String>,
}

impl AdminServer {
    /// Reads the token, binds the address and starts the server thread.
    /// Bind errors surface here, before the proxy serves.
    pub fn start(cfg: &AdminConfig, state: Arc<ProxyState>) -> Result<AdminServer, AdminError> {
        let token = cfg
            .token_file
            .as_deref()
            .map(crate::config::read_admin_token)
            .transpose()?;
        let bind_err = |source| AdminError::Bind {
            addr: cfg.address.to_string(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?;
        // Sockets register with the admin runtime's reactor, not the
        // caller's.
        let (listener, addr) = {
            let _enter = runtime.enter();
            match &cfg.address {
                ListenAddr::Tcp(a) => {
                    let l = std::net::TcpListener::bind(a).map_err(bind_err)?;
                    l.set_nonblocking(true).map_err(bind_err)?;
                    let local = l.local_addr().map_err(bind_err)?;
                    let l = tokio::net::TcpListener::from_std(l).map_err(bind_err)?;
                    (AdminListener::Tcp(l), ListenAddr::Tcp(local))
                }
                ListenAddr::Unix(p) => {
                    let l = bind_unix(p).map_err(bind_err)?;
                    (AdminListener::Unix(l), ListenAddr::Unix(p.clone()))
                }
            }
        };
        let ctx = Arc::new(Ctx { state, token });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("portcullis-admin".into())
            .spawn(move || runtime.block_on(serve(listener, ctx, stopped)))
            .map_err(AdminError::Runtime)?;
        tracing::info!(address = %addr, "admin API listening");
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // The loop exits at once on the signal; open connections are
            // dropped with the runtime.
            let _ = t.join();
        }
        if let ListenAddr::Unix(p) = &self.addr {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::debug!(path = %p.display(), error = %e, "could not remove admin socket file");
            }
        }
    }
}

/// Binds a Unix socket readable and writable by its owner only: the admin
/// API controls the proxy. A stale socket file nobody answers on is
/// replaced; anything else at the path is an error.
fn bind_unix(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let l = crate::listener::bind_unix(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn serve(listener: AdminListener, ctx: Arc<Ctx>, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(conn) => {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("admin: {MAX_CONNECTIONS} connections open; closing a new one");
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    match conn {
                        Conn::Tcp(s) => serve_connection(s, ctx).await,
                        Conn::Unix(s) => serve_connection(s, ctx).await,
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &AdminListener) -> io::Result<Conn> {
    match l {
        AdminListener::Tcp(l) => Ok(Conn::Tcp(l.accept().await?.0)),
        AdminListener::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
    }
}

async fn serve_connection<S>(stream: S, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "admin: connection error"),
        Err(_) => tracing::debug!("admin: connection closed after {CONNECTION_LIFETIME:?}"),
    }
}

type Answer = Response<Full<Bytes>>;

/// Largest request body accepted (the failover settings are a few hundred
/// bytes).
const MAX_BODY: usize = 64 * 1024;

/// Answers one request.
async fn handle(req: Request<Incoming>, ctx: &Ctx) -> Answer {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("cannot read the request body: {e}"),
            )
        }
    };
    route_with_body(&parts.method, parts.uri.path(), &parts.headers, &body, ctx)
}

#[cfg(test)]
fn route(method: &Method, path: &str, headers: &HeaderMap, ctx: &Ctx) -> Answer {
    route_with_body(method, path, headers, &[], ctx)
}

fn route_with_body(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    ctx: &Ctx,
) -> Answer {
    // keepalived and load balancers probe health without credentials.
    if path == "/health" && method == Method::GET {
        return health(&ctx.state);
    }
    if let Some(token) = &ctx.token {
        if !authorized(headers, token) {
            tracing::warn!(%method, path, "admin: request without a valid bearer token");
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
            return r;
        }
    }
    if let Some(name) = path
        .strip_prefix("/listeners/")
        .and_then(|rest| rest.strip_suffix("/failover"))
    {
        return failover(method, name, body, ctx);
    }
    if path == "/primary" {
        return primary(method, body, ctx);
    }
    let allowed = match path {
        "/health" | "/status" | "/metrics" | "/topology" => "GET",
        "/reload" => "POST",
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no such endpoint: {path} (endpoints: /health, /status, /metrics, /reload, /topology, /primary, /listeners/NAME/failover)"
                ),
            )
        }
    };
    if method.as_str() != allowed {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} accepts {allowed} only"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return r;
    }
    match path {
        "/status" => json(StatusCode::OK, &Status::collect(&ctx.state)),
        "/metrics" => respond(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            crate::exposition::encode(&ctx.state),
        ),
        "/reload" => reload(&ctx.state),
        "/topology" => match &ctx.state.topology {
            Some(t) => json(StatusCode::OK, &t.status()),
            None => error(
                StatusCode::NOT_FOUND,
                "no topology: the config has no [monitor] section",
            ),
        },
        // "/health" with GET was answered above.
        _ => health(&ctx.state),
    }
}

/// `POST /reload`: the same as SIGHUP. 200 with the report when every
/// listener's TLS is what the file says; 422 when the file is invalid
/// (nothing changed) or a listener kept its old material (report says why).
fn reload(state: &ProxyState) -> Answer {
    match crate::reload::reload_config(state, crate::reload::Trigger::Admin) {
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("config invalid, nothing changed: {e}"),
        ),
        Ok(report) => {
            let code = if report.all_applied() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(code, &report)
        }
    }
}

/// `POST /primary {"backend": NAME}` pins the primary (overriding the
/// monitor); `DELETE /primary` returns to the monitor's view. Both answer
/// with the topology.
fn primary(method: &Method, body: &[u8], ctx: &Ctx) -> Answer {
    let Some(t) = &ctx.state.topology else {
        return error(
            StatusCode::NOT_FOUND,
            "no topology: the config has no [monitor] section",
        );
    };
    let pin = match *method {
        Method::DELETE => None,
        Method::POST => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Pin {
                backend: String,
            }
            match serde_json::from_slice::<Pin>(body) {
                Ok(p) => Some(p.backend),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"backend\": \"NAME\"}}: {e}"),
                    )
                }
            }
        }
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "/primary accepts POST or DELETE",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        }
    };
    match t.pin(pin) {
        Ok(()) => json(StatusCode::OK, &t.status()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `GET`/`PUT /listeners/{name}/failover`: read or switch a listener's
/// redirect settings at runtime. A change applies to connections accepted
/// from now on; established sessions are never touched.
fn failover(method: &Method, name: &str, body: &[u8], ctx: &Ctx) -> Answer {
    let Some(l) = ctx
        .state
        .listeners
        .iter()
        .find(|l| l.runtime.config.name == name)
    else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no listener named {name:?}"),
        );
    };
    let rt = &l.runtime;
    match *method {
        Method::GET => json(StatusCode::OK, &**rt.failover.load()),
        Method::PUT => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Change {
                mode: crate::failover::FailoverMode,
                target: Option<crate::failover::FailoverTarget>,
                message: Option<String>,
                error_code: Option<u16>,
            }
            let change: Change = match serde_json::from_slice(body) {
                Ok(c) => c,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid JSON body: {e} (expected {{\"mode\": \"off|on|all\", \"target\": \"host:port\", \"message\": \"...\", \"error_code\": 4196}})"),
                    )
                }
            };
            let old = rt.failover.load_full();
            let new = crate::failover::FailoverSettings {
                mode: change.mode,
                target: change.target.or_else(|| old.target.clone()),
                message: change.message.or_else(|| old.message.clone()),
                error_code: change.error_code.unwrap_or(old.error_code),
            };
            if new.target == Some(crate::failover::FailoverTarget::Primary)
                && ctx.state.topology.is_none()
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "target \"primary\" follows the topology: the config has no [monitor] section",
                );
            }
            if let Err(e) = new.validate() {
                return error(StatusCode::BAD_REQUEST, &e);
            }
            tracing::info!(
                listener = %name,
                from = old.mode.as_str(),
                to = new.mode.as_str(),
                target = new.target_str(),
                "failover mode changed via the admin API"
            );
            rt.failover.store(std::sync::Arc::new(new));
            json(StatusCode::OK, &**rt.failover.load())
        }
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("/listeners/{name}/failover accepts GET and PUT"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, PUT"));
            r
        }
    }
}

fn health(state: &ProxyState) -> Answer {
    match state.health() {
        Ok(()) => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
        Err(reasons) => error(StatusCode::SERVICE_UNAVAILABLE, &reasons.join("; ")),
    }
}

/// Compares the bearer token in constant time (no early exit on the first
/// differing byte).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn error(status: StatusCode, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            respond(status, "application/json", body)
        }
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            format!("{{\"error\": \"cannot encode the answer: {e}\"}}\n"),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let t = "0123456789abcdef";
        assert!(authorized(&headers(Some("Bearer 0123456789abcdef")), t));
        assert!(authorized(&headers(Some("bearer 0123456789abcdef")), t));
        assert!(!authorized(&headers(None), t));
        assert!(!authorized(&headers(Some("Bearer 0123456789abcde")), t));
        assert!(!authorized(&headers(Some("Bearer 0123456789abcdefX")), t));
        assert!(!authorized(&headers(Some("Bearer ")), t));
        assert!(!authorized(&headers(Some("Basic 0123456789abcdef")), t));
        assert!(!authorized(&headers(Some("0123456789abcdef")), t));
    }

    fn ctx(token: Option<&str>) -> Ctx {
        Ctx {
            state: Arc::new(ProxyState::new(
                Vec::new(),
                Vec::new(),
                std::path::PathBuf::from("/nonexistent/portcullis.toml"),
                Default::default(),
                None,
            )),
            token: token.map(str::to_string),
        }
    }

    fn answer(r: Answer) -> (StatusCode, Option<String>, String) {
        let status = r.status();
        let allow = r
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = match block_on(r.into_body().collect()) {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    /// `Full` is ready at once: poll it on a throwaway runtime.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn routing_rules() {
        let open = ctx(None);
        let h = headers(None);
        assert_eq!(
            answer(route(&Method::GET, "/nope", &h, &open)),
            (
                StatusCode::NOT_FOUND,
                None,
                "{\n  \"error\": \"no such endpoint: /nope (endpoints: /health, /status, /metrics, /reload, /topology, /primary, /listeners/NAME/failover)\"\n}\n".into()
            )
        );
        assert_eq!(
            answer(route(&Method::POST, "/status", &h, &open)),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET".into()),
                "{\n  \"error\": \"/status accepts GET only\"\n}\n".into()
            )
        );
        assert_eq!(
            answer(route(&Method::GET, "/reload", &h, &open)).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Bound but not running, and no listener: both reasons.
        assert_eq!(
            answer(route(&Method::GET, "/health", &h, &open)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "{\n  \"error\": \"starting: listeners bound but not accepting yet; no listener is bound\"\n}\n".into()
            )
        );
        open.state.set_lifecycle(crate::state::Lifecycle::Draining);
        assert_eq!(
            answer(route(&Method::GET, "/health", &h, &open)).2,
            "{\n  \"error\": \"draining: not accepting new connections, waiting for sessions to finish; no listener is bound\"\n}\n"
        );
    }

    #[test]
    fn token_guards_everything_but_health() {
        let locked = ctx(Some("0123456789abcdef"));
        let none = headers(None);
        let good = headers(Some("Bearer 0123456789abcdef"));
        for (m, p) in [
            (Method::GET, "/status"),
            (Method::GET, "/metrics"),
            (Method::POST, "/reload"),
            (Method::GET, "/nope"),
            (Method::POST, "/health"),
        ] {
            assert_eq!(
                answer(route(&m, p, &none, &locked)),
                (
                    StatusCode::UNAUTHORIZED,
                    None,
                    "{\n  \"error\": \"missing or invalid bearer token\"\n}\n".into()
                ),
                "{m} {p}"
            );
        }
        assert_eq!(
            answer(route(&Method::GET, "/health", &none, &locked)).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(route(&Method::GET, "/status", &good, &locked)).0,
            StatusCode::OK
        );
        // Authorized: the reload runs (and fails: this state has no file).
        let (code, _, body) = answer(route(&Method::POST, "/reload", &good, &locked));
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("cannot read config file"), "{body}");
    }
}
