//! `GET /sessions` (filtered by listener, user, certificate subject) and
//! `DELETE /sessions/ID`, and the table `portcullis sessions` prints.

use serde::{Deserialize, Serialize};

use crate::sessions::{Filter, SessionView};
use crate::state::ProxyState;

/// The `GET /sessions` answer. Field names are part of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// Every open session that `filter` matches, by listener in file order,
/// oldest first within each.
pub fn list(state: &ProxyState, filter: &Filter) -> SessionList {
    let sessions = state
        .listeners
        .iter()
        .flat_map(|l| {
            let (name, route) = (l.name(), l.runtime.route.name());
            l.runtime
                .sessions
                .snapshot()
                .into_iter()
                .map(move |r| r.view(name, route))
        })
        .filter(|s| filter.matches(s))
        .collect();
    SessionList { sessions }
}

/// Kills open session `id`: what it was, or `None` when there is no such
/// session (or it was already killed).
pub fn kill(state: &ProxyState, id: u32) -> Option<SessionView> {
    state.listeners.iter().find_map(|l| {
        let record = l.runtime.sessions.get(id)?;
        let view = record.view(l.name(), l.runtime.route.name());
        if !record.kill() {
            return None;
        }
        tracing::info!(
            id,
            listener = %l.name(),
            client = %view.client,
            user = view.user.as_deref(),
            subject = view.subject.as_deref(),
            "admin: session killed"
        );
        Some(view)
    })
}

/// A session id as given in a path: decimal, or hex with `0x`.
pub fn parse_id(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed
        .map_err(|_| format!("invalid session id {s:?}: expected the number `GET /sessions` shows"))
}

/// The filter of a query like `listener=public&user=app&subject=CN%3Dapp`
/// (percent-encoded; `+` is a space).
pub fn parse_filter(query: Option<&str>) -> Result<Filter, String> {
    let mut f = Filter::default();
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(f);
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "listener" => &mut f.listener,
            "user" => &mut f.user,
            "subject" => &mut f.subject,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?}: the filters are listener=, user= and subject="
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("{k}= is given twice"));
        }
        *slot = Some(percent_decode(v)?);
    }
    Ok(f)
}

/// Encodes a filter value for a query (the inverse of the decoding above).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bad = || format!("invalid percent-encoding in {s:?}");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl SessionList {
    /// The table `portcullis sessions` prints.
    pub fn render(&self) -> String {
        if self.sessions.is_empty() {
            return "no open sessions\n".into();
        }
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        super::status::table(
            &[
                "ID", "LISTENER", "CLIENT", "SUBJECT", "SERIAL", "USER", "BACKEND", "AGE", "UP",
                "DOWN", "STATE",
            ],
            self.sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.listener.clone(),
                        match &s.proxied_by {
                            Some(p) => format!("{} (via {p})", s.client),
                            None => s.client.clone(),
                        },
                        dash(&s.subject),
                        dash(&s.serial),
                        dash(&s.user),
                        s.backend.clone().unwrap_or_else(|| s.route.clone()),
                        super::status::human_duration(s.age_seconds),
                        s.bytes_up.to_string(),
                        s.bytes_down.to_string(),
                        s.state.clone(),
                    ]
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_ids_parse() {
        assert_eq!(parse_filter(None), Ok(Filter::default()));
        let f = parse_filter(Some("listener=public&subject=CN%3Dapp%2C+O%3DFleet")).unwrap();
        assert_eq!(f.listener.as_deref(), Some("public"));
        assert_eq!(f.subject.as_deref(), Some("CN=app, O=Fleet"));
        assert!(parse_filter(Some("host=x"))
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(parse_filter(Some("user=a&user=b"))
            .unwrap_err()
            .contains("twice"));
        assert!(parse_filter(Some("user=%zz")).is_err());
        let subject = "CN=app, O=Fleet+1/é";
        assert_eq!(
            parse_filter(Some(&format!("subject={}", percent_encode(subject))))
                .unwrap()
                .subject
                .as_deref(),
            Some(subject)
        );
        assert_eq!(parse_id("2147483649"), Ok(0x8000_0001));
        assert_eq!(parse_id("0x80000001"), Ok(0x8000_0001));
        assert!(parse_id("x").is_err());
    }

    #[test]
    fn renders_a_table() {
        let list = SessionList {
            sessions: vec![SessionView {
                id: 0x8000_0001,
                listener: "public".into(),
                client: "192.0.2.7:50000".into(),
                proxied_by: Some("[::1]:40000".into()),
                subject: Some("CN=app".into()),
                serial: Some("0a".into()),
                user: Some("app".into()),
                backend: Some("db".into()),
                route: "db".into(),
                started_at: 1_700_000_000,
                age_seconds: 65,
                bytes_up: 120,
                bytes_down: 4096,
                state: "relaying".into(),
            }],
        };
        assert_eq!(
            list.render(),
            "\
ID          LISTENER  CLIENT                             SUBJECT  SERIAL  USER  BACKEND  AGE    UP   DOWN  STATE
2147483649  public    192.0.2.7:50000 (via [::1]:40000)  CN=app   0a      app   db       1m05s  120  4096  relaying
"
        );
        assert_eq!(
            SessionList { sessions: vec![] }.render(),
            "no open sessions\n"
        );
    }
}
