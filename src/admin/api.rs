//! One admin request, from its head to its answer.
//!
//! The order is the point: `Host` (TCP only), then the `/health` paths
//! (no token), then the token or the read-only rule, then the route — all
//! from the request head. Only a request that passed all of that, to an
//! endpoint that takes a body, has its body read, with a size cap and a
//! deadline. A client without a token therefore never makes the API wait
//! for its body.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::access::{check_host, Access, Verdict, READ_ONLY_REASON};
use super::sessions;
use super::slots::Slot;
use super::status::{AdminStatus, Status};
use crate::metrics::METRICS_CONTENT_TYPE;
use crate::state::ProxyState;

/// Largest request body accepted (the failover settings are a few hundred
/// bytes).
pub(super) const MAX_BODY: usize = 64 * 1024;
/// A request body must arrive within this time after its headers. Bodies
/// are read only from clients that passed the token check, and they are a
/// few hundred bytes; a few seconds is generous even over a slow SSH
/// tunnel, and short enough that a stuck client frees its slot soon.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request of one admin server shares.
pub(super) struct Ctx {
    pub(super) state: Arc<ProxyState>,
    pub(super) access: Access,
    /// Names `Host` may carry besides IP literals and `localhost`.
    pub(super) allowed_hosts: Vec<String>,
    /// Shown in `/status`.
    pub(super) admin: AdminStatus,
}

/// The connection a request came on.
pub(super) struct Peer {
    /// A Unix-socket connection: no `Host` check (a browser cannot open a
    /// socket file).
    pub(super) unix: bool,
    pub(super) slot: Slot,
}

type Answer = Response<Full<Bytes>>;

/// The endpoints, as decided from a request's method and path.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    Status,
    Metrics,
    Topology,
    Reload,
    PinPrimary,
    UnpinPrimary,
    GetFailover(&'a str),
    SetFailover(&'a str),
    Sessions,
    KillSession(&'a str),
}

impl Endpoint<'_> {
    /// Whether it reads a request body.
    fn takes_body(&self) -> bool {
        matches!(self, Endpoint::PinPrimary | Endpoint::SetFailover(_))
    }
}

const ENDPOINTS: &str = "/health, /health/primary, /health/listener/NAME, /status, /metrics, /reload, /topology, /primary, /listeners/NAME/failover, /sessions, /sessions/ID";

/// Answers one request.
pub(super) async fn handle(req: Request<Incoming>, ctx: &Ctx, peer: &Peer) -> Answer {
    let (parts, body) = req.into_parts();
    if let Some(answer) = check_head(&parts.method, &parts.uri, &parts.headers, ctx, peer) {
        return answer;
    }
    let path = parts.uri.path();
    let endpoint = match route(&parts.method, path) {
        Ok(e) => e,
        Err(refused) => return refused.answer(),
    };
    let body = if endpoint.takes_body() {
        match read_body(body).await {
            Ok(b) => b,
            Err(refused) => return refused.answer(),
        }
    } else {
        // Never read: a body nobody asked for (hyper closes the connection
        // instead of reading it for keep-alive).
        drop(body);
        Bytes::new()
    };
    serve(&endpoint, parts.uri.query(), &body, ctx)
}

/// Everything decided from the head before routing: `Host`, the `/health`
/// paths, the token and the read-only rule. `Some` is the answer.
fn check_head(
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    ctx: &Ctx,
    peer: &Peer,
) -> Option<Answer> {
    if !peer.unix {
        if let Err(why) = check_host(uri, headers, &ctx.allowed_hosts) {
            tracing::warn!(%method, path = uri.path(), "admin: request refused: {why}");
            return Some(error(StatusCode::MISDIRECTED_REQUEST, &why));
        }
    }
    // keepalived and load balancers probe health without credentials.
    let path = uri.path();
    if *method == Method::GET && (path == "/health" || path.starts_with("/health/")) {
        return Some(health(path, uri.query(), &ctx.state));
    }
    match ctx.access.check(method, headers) {
        Verdict::Allowed { credentials } => {
            if credentials {
                peer.slot.mark_credentials();
            }
            None
        }
        Verdict::NoToken => {
            tracing::warn!(%method, path, "admin: request without a valid bearer token");
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
            Some(r)
        }
        Verdict::ReadOnly => {
            tracing::warn!(%method, path, "admin: change refused: {READ_ONLY_REASON}");
            Some(error(StatusCode::FORBIDDEN, READ_ONLY_REASON))
        }
    }
}

/// A request refused before its endpoint ran: its status, message and,
/// for 405, the methods allowed.
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl Refused {
    fn new(status: StatusCode, message: String) -> Refused {
        Refused {
            status,
            message,
            allow: None,
        }
    }

    fn not_allowed(message: String, allow: &'static str) -> Refused {
        Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message,
            allow: Some(allow),
        }
    }

    fn answer(self) -> Answer {
        let mut r = error(self.status, &self.message);
        if let Some(allow) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        r
    }
}

/// The endpoint for a method and path; `Err` is the 404 or 405.
fn route<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, Refused> {
    if let Some(name) = path
        .strip_prefix("/listeners/")
        .and_then(|rest| rest.strip_suffix("/failover"))
    {
        return match *method {
            Method::GET => Ok(Endpoint::GetFailover(name)),
            Method::PUT => Ok(Endpoint::SetFailover(name)),
            _ => Err(Refused::not_allowed(
                format!("/listeners/{name}/failover accepts GET and PUT"),
                "GET, PUT",
            )),
        };
    }
    if let Some(id) = path.strip_prefix("/sessions/") {
        return match *method {
            Method::DELETE => Ok(Endpoint::KillSession(id)),
            _ => Err(Refused::not_allowed(
                format!("/sessions/{id} accepts DELETE only"),
                "DELETE",
            )),
        };
    }
    let allow = match (path, method) {
        ("/status", &Method::GET) => return Ok(Endpoint::Status),
        ("/sessions", &Method::GET) => return Ok(Endpoint::Sessions),
        ("/metrics", &Method::GET) => return Ok(Endpoint::Metrics),
        ("/topology", &Method::GET) => return Ok(Endpoint::Topology),
        ("/reload", &Method::POST) => return Ok(Endpoint::Reload),
        ("/primary", &Method::POST) => return Ok(Endpoint::PinPrimary),
        ("/primary", &Method::DELETE) => return Ok(Endpoint::UnpinPrimary),
        ("/status" | "/metrics" | "/topology" | "/sessions", _) => "GET",
        ("/reload", _) => "POST",
        ("/primary", _) => {
            return Err(Refused::not_allowed(
                "/primary accepts POST or DELETE".into(),
                "POST, DELETE",
            ))
        }
        _ if path == "/health" || path.starts_with("/health/") => "GET",
        _ => {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path} (endpoints: {ENDPOINTS})"),
            ))
        }
    };
    Err(Refused::not_allowed(
        format!("{path} accepts {allow} only"),
        allow,
    ))
}

/// Reads a request body of at most [`MAX_BODY`] bytes within
/// [`BODY_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Bytes, Refused> {
    let read = http_body_util::Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )),
        Ok(Err(e)) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => Err(Refused::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

fn serve(endpoint: &Endpoint<'_>, query: Option<&str>, body: &[u8], ctx: &Ctx) -> Answer {
    match endpoint {
        Endpoint::Sessions => match sessions::parse_filter(query) {
            Ok(f) => json(StatusCode::OK, &sessions::list(&ctx.state, &f)),
            Err(e) => error(StatusCode::BAD_REQUEST, &e),
        },
        Endpoint::KillSession(id) => match sessions::parse_id(id) {
            Err(e) => error(StatusCode::BAD_REQUEST, &e),
            Ok(id) => match sessions::kill(&ctx.state, id) {
                Some(s) => json(StatusCode::OK, &serde_json::json!({ "killed": s })),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no open session with id {id}"),
                ),
            },
        },
        Endpoint::Status => {
            let mut s = Status::collect(&ctx.state);
            s.admin = Some(ctx.admin.clone());
            json(StatusCode::OK, &s)
        }
        Endpoint::Metrics => respond(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            crate::exposition::encode(&ctx.state),
        ),
        Endpoint::Reload => reload(&ctx.state),
        Endpoint::Topology => match &ctx.state.topology {
            Some(t) => json(StatusCode::OK, &t.status()),
            None => no_topology(),
        },
        Endpoint::PinPrimary => primary(Some(body), ctx),
        Endpoint::UnpinPrimary => primary(None, ctx),
        Endpoint::GetFailover(name) | Endpoint::SetFailover(name) => {
            let set = matches!(endpoint, Endpoint::SetFailover(_));
            failover(name, set.then_some(body), ctx)
        }
    }
}

fn no_topology() -> Answer {
    error(
        StatusCode::NOT_FOUND,
        "no topology: the config has no [monitor] section",
    )
}

/// The `/health` paths (`GET`, no token).
fn health(path: &str, query: Option<&str>, state: &ProxyState) -> Answer {
    match path {
        "/health" => match state.health() {
            Ok(()) => ok_text("ok".into()),
            Err(reasons) => error(StatusCode::SERVICE_UNAVAILABLE, &reasons.join("; ")),
        },
        "/health/primary" => health_primary(query, state),
        _ => match path.strip_prefix("/health/listener/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                match state.listener_health(name) {
                    None => error(
                        StatusCode::NOT_FOUND,
                        &format!("no listener named {name:?}"),
                    ),
                    Some(Ok(to)) => ok_text(format!("ok: {to}")),
                    Some(Err(reasons)) => {
                        error(StatusCode::SERVICE_UNAVAILABLE, &reasons.join("; "))
                    }
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no such endpoint: {path} (health endpoints: /health, /health/primary, /health/primary?backend=NAME, /health/listener/NAME)"),
            ),
        },
    }
}

/// `GET /health/primary[?backend=NAME]`.
fn health_primary(query: Option<&str>, state: &ProxyState) -> Answer {
    if state.topology.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "no topology: the config has no [monitor] section, so which backend is the primary is not known",
        );
    }
    let backend = match backend_param(query) {
        Ok(Some(b)) => b,
        Ok(None) => match state.local_backend() {
            Ok(b) => b,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        },
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    match state.primary_health(&backend) {
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no backend named {backend:?}"),
        ),
        Some(Ok(text)) => ok_text(format!("ok: {text}")),
        Some(Err(why)) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// The `backend` of `?backend=NAME` (backend names need no escaping: they
/// are refused in the config unless plain).
fn backend_param(query: Option<&str>) -> Result<Option<String>, String> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let mut backend = None;
    for pair in q.split('&') {
        match pair.split_once('=') {
            Some(("backend", v)) if !v.is_empty() && backend.is_none() => {
                backend = Some(v.to_string())
            }
            _ => {
                return Err(format!(
                    "unexpected query {q:?}: the only parameter is backend=NAME, once"
                ))
            }
        }
    }
    Ok(backend)
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

/// `POST /primary {"backend": NAME}` (`Some(body)`) pins the primary
/// (overriding the monitor); `DELETE /primary` returns to the monitor's
/// view. Both answer with the topology.
fn primary(body: Option<&[u8]>, ctx: &Ctx) -> Answer {
    let Some(t) = &ctx.state.topology else {
        return no_topology();
    };
    let pin = match body {
        None => None,
        Some(body) => {
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
    };
    match t.pin(pin) {
        Ok(()) => json(StatusCode::OK, &t.status()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `GET` (`None`) / `PUT` (`Some(body)`) `/listeners/{name}/failover`:
/// read or switch a listener's redirect settings at runtime. A change
/// applies to connections accepted from now on; established sessions are
/// never touched.
fn failover(name: &str, body: Option<&[u8]>, ctx: &Ctx) -> Answer {
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
    let Some(body) = body else {
        return json(StatusCode::OK, &**rt.failover.load());
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        mode: crate::failover::FailoverMode,
        target: Option<crate::failover::FailoverTarget>,
        message: Option<String>,
        error_code: Option<u16>,
        style: Option<crate::failover::FailoverStyle>,
        followers: Option<Vec<String>>,
        pass_backend_redirect: Option<bool>,
    }
    let change: Change = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e} (expected {{\"mode\": \"off|on|all\", \"target\": \"host:port\", \"message\": \"...\", \"error_code\": 4196, \"style\": \"error|redirect_url|both\", \"followers\": [\"NAME >= VERSION\"], \"pass_backend_redirect\": false}})"),
            )
        }
    };
    let old = rt.failover.load_full();
    let followers = match change.followers {
        Some(list) => match list
            .iter()
            .map(|f| f.parse())
            .collect::<Result<Vec<_>, String>>()
        {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        },
        None => old.followers.clone(),
    };
    let new = crate::failover::FailoverSettings {
        mode: change.mode,
        target: change.target.or_else(|| old.target.clone()),
        message: change.message.or_else(|| old.message.clone()),
        error_code: change.error_code.unwrap_or(old.error_code),
        style: change.style.unwrap_or(old.style),
        followers,
        pass_backend_redirect: change
            .pass_backend_redirect
            .unwrap_or(old.pass_backend_redirect),
    };
    if new.target == Some(crate::failover::FailoverTarget::Primary) && ctx.state.topology.is_none()
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
        style = new.style.as_str(),
        "failover mode changed via the admin API"
    );
    rt.failover.store(Arc::new(new));
    json(StatusCode::OK, &**rt.failover.load())
}

fn ok_text(body: String) -> Answer {
    respond(StatusCode::OK, "text/plain; charset=utf-8", body)
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
    use crate::admin::slots::Slots;

    fn ctx(access: Access) -> Ctx {
        Ctx {
            state: Arc::new(ProxyState::new(
                Vec::new(),
                Vec::new(),
                std::path::PathBuf::from("/nonexistent/portcullis.toml"),
                Default::default(),
                None,
            )),
            admin: AdminStatus {
                address: "127.0.0.1:9306".into(),
                mutation: access.policy(),
                allowed_hosts: Vec::new(),
                health_primary_backend: None,
            },
            access,
            allowed_hosts: Vec::new(),
        }
    }

    fn peer(unix: bool) -> Peer {
        Peer {
            unix,
            slot: Slots::new(1).admit().unwrap(),
        }
    }

    fn headers(auth: Option<&str>, host: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        if let Some(a) = host {
            h.insert(header::HOST, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    /// The answer to a request without a body, as the server would give
    /// it (head checks, route, endpoint).
    fn answer(
        ctx: &Ctx,
        peer: &Peer,
        m: Method,
        path: &str,
        h: &HeaderMap,
    ) -> (u16, Option<String>, String) {
        let uri: hyper::Uri = path.parse().unwrap();
        let r = check_head(&m, &uri, h, ctx, peer).unwrap_or_else(|| match route(&m, uri.path()) {
            Ok(e) => serve(&e, None, b"", ctx),
            Err(refused) => refused.answer(),
        });
        let status = r.status().as_u16();
        let allow = r
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect());
        let body = match body {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    fn err(message: &str) -> String {
        format!(
            "{{\n  \"error\": {}\n}}\n",
            serde_json::to_string(message).unwrap()
        )
    }

    #[test]
    fn routing_rules() {
        let open = ctx(Access::Socket);
        let p = peer(true);
        let h = headers(None, None);
        assert_eq!(
            answer(&open, &p, Method::GET, "/nope", &h),
            (
                404,
                None,
                err(&format!("no such endpoint: /nope (endpoints: {ENDPOINTS})"))
            )
        );
        assert_eq!(
            answer(&open, &p, Method::POST, "/status", &h),
            (405, Some("GET".into()), err("/status accepts GET only"))
        );
        assert_eq!(answer(&open, &p, Method::GET, "/reload", &h).0, 405);
        assert_eq!(
            answer(&open, &p, Method::PUT, "/primary", &h).1.as_deref(),
            Some("POST, DELETE")
        );
        assert_eq!(
            answer(&open, &p, Method::POST, "/health", &h),
            (405, Some("GET".into()), err("/health accepts GET only"))
        );
        // Bound but not running, and no listener: both reasons.
        assert_eq!(
            answer(&open, &p, Method::GET, "/health", &h),
            (
                503,
                None,
                err("starting: listeners bound but not accepting yet; no listener is bound")
            )
        );
        open.state.set_lifecycle(crate::state::Lifecycle::Draining);
        assert_eq!(
            answer(&open, &p, Method::GET, "/health", &h).2,
            err("draining: not accepting new connections, waiting for sessions to finish; no listener is bound")
        );
        assert_eq!(
            answer(&open, &p, Method::GET, "/health/listener/nope", &h),
            (404, None, err("no listener named \"nope\""))
        );
        assert_eq!(
            answer(&open, &p, Method::GET, "/health/elsewhere", &h).0,
            404
        );
        assert_eq!(
            answer(&open, &p, Method::GET, "/health/primary", &h),
            (404, None, err("no topology: the config has no [monitor] section, so which backend is the primary is not known"))
        );
        assert_eq!(
            answer(&open, &p, Method::GET, "/topology", &h),
            (
                404,
                None,
                err("no topology: the config has no [monitor] section")
            )
        );
    }

    #[test]
    fn token_guards_everything_but_health() {
        let locked = ctx(Access::Token("0123456789abcdef".into()));
        let p = peer(false);
        let none = headers(None, Some("localhost"));
        let good = headers(Some("Bearer 0123456789abcdef"), Some("localhost"));
        for (m, path) in [
            (Method::GET, "/status"),
            (Method::GET, "/metrics"),
            (Method::POST, "/reload"),
            (Method::GET, "/nope"),
            (Method::POST, "/health"),
            (Method::PUT, "/listeners/x/failover"),
        ] {
            assert_eq!(
                answer(&locked, &p, m.clone(), path, &none),
                (401, None, err("missing or invalid bearer token")),
                "{m} {path}"
            );
        }
        assert_eq!(answer(&locked, &p, Method::GET, "/health", &none).0, 503);
        assert_eq!(
            answer(&locked, &p, Method::GET, "/health/listener/x", &none).0,
            404
        );
        assert!(!p.slot.evicted().is_cancelled());
        assert_eq!(answer(&locked, &p, Method::GET, "/status", &good).0, 200);
        // Authorized: the reload runs (and fails: this state has no file).
        let (code, _, body) = answer(&locked, &p, Method::POST, "/reload", &good);
        assert_eq!(code, 422);
        assert!(body.contains("cannot read config file"), "{body}");
    }

    #[test]
    fn tcp_without_token_is_read_only() {
        let ro = ctx(Access::ReadOnly);
        let p = peer(false);
        let h = headers(None, Some("127.0.0.1:9306"));
        for (m, path) in [
            (Method::POST, "/reload"),
            (Method::PUT, "/listeners/x/failover"),
            (Method::POST, "/primary"),
            (Method::DELETE, "/primary"),
            (Method::POST, "/status"),
        ] {
            assert_eq!(
                answer(&ro, &p, m.clone(), path, &h),
                (403, None, err(READ_ONLY_REASON)),
                "{m} {path}"
            );
        }
        let (code, _, body) = answer(&ro, &p, Method::GET, "/status", &h);
        assert_eq!(code, 200);
        let status: Status = serde_json::from_str(&body).unwrap();
        assert_eq!(status.admin.unwrap().mutation, ro.access.policy());
    }

    #[test]
    fn host_is_checked_on_tcp_before_anything_else() {
        let c = ctx(Access::ReadOnly);
        let evil = headers(None, Some("evil.example:9306"));
        let (code, _, body) = answer(&c, &peer(false), Method::GET, "/health", &evil);
        assert_eq!(code, 421);
        assert!(
            body.contains("\"Host \\\"evil.example\\\" is not an IP address"),
            "{body}"
        );
        // Not on a Unix socket.
        assert_eq!(
            answer(&c, &peer(true), Method::GET, "/health", &evil).0,
            503
        );
    }

    #[test]
    fn backend_params() {
        assert_eq!(backend_param(None), Ok(None));
        assert_eq!(backend_param(Some("")), Ok(None));
        assert_eq!(backend_param(Some("backend=db1")), Ok(Some("db1".into())));
        for bad in ["backend=", "backend=a&backend=b", "x=1", "backend"] {
            assert!(backend_param(Some(bad)).is_err(), "{bad}");
        }
    }
}
