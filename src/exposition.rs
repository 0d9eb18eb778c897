//! The Prometheus (OpenMetrics text) exposition of the running proxy, for
//! `GET /metrics`: every counter of [`crate::metrics`] and what the scrape
//! reads from [`ProxyState`] (TLS material in service, reload counters,
//! the topology).
//!
//! Each family is one call of `family`: name, help and the samples as
//! (labels, value); the value's type (`Counter`, `Gauge`, `Histogram`) is
//! the family's.
//!
//! Metric names, help texts and label values are part of the public
//! interface (dashboards and alerts depend on them): never change one once
//! released. docs/operations.md lists them all.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::failover::RedirectForm;
use crate::metrics::{LabelCounts, ListenerMetrics, VERSION};
use crate::monitor::{Role, Topology};
use crate::state::{ListenerState, ProxyState};
use crate::tls::CertInfo;

/// The OpenMetrics text exposition of every metric (served with
/// [`crate::metrics::METRICS_CONTENT_TYPE`]).
pub fn encode(state: &Arc<ProxyState>) -> String {
    let mut registry = Registry::with_prefix("portcullis");
    registry.register_collector(Box::new(Scrape(state.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// A sample's value; its type is its family's.
trait Value {
    const TYPE: MetricType;
    fn encode(&self, m: &mut MetricEncoder<'_>) -> fmt::Result;
}

struct Counter(u64);
struct Gauge(i64);
/// (sum in seconds, count, per-bucket counts with their upper bounds).
struct Histogram((f64, u64, Vec<(f64, u64)>));

impl Value for Counter {
    const TYPE: MetricType = MetricType::Counter;
    fn encode(&self, m: &mut MetricEncoder<'_>) -> fmt::Result {
        m.encode_counter::<NoLabelSet, u64, u64>(&self.0, None)
    }
}

impl Value for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
    fn encode(&self, m: &mut MetricEncoder<'_>) -> fmt::Result {
        m.encode_gauge(&self.0)
    }
}

impl Value for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
    fn encode(&self, m: &mut MetricEncoder<'_>) -> fmt::Result {
        let (sum, count, buckets) = &self.0;
        m.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }
}

/// Encodes one metric family: its descriptor, then one sample per
/// (labels, value).
fn family<L: EncodeLabelSet, V: Value>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, V::TYPE)?;
    for (labels, value) in samples {
        value.encode(&mut m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Per listener, a counter keyed by one more label (`key`) whose values
/// appear at run time.
fn by_listener<'a>(
    listeners: &'a [Arc<ListenerState>],
    key: &'static str,
    read: fn(&ListenerMetrics) -> LabelCounts,
) -> impl Iterator<Item = (impl EncodeLabelSet + 'a, Counter)> + 'a {
    listeners.iter().flat_map(move |l| {
        read(&l.metrics)
            .into_iter()
            .map(move |(value, n)| (([("listener", l.name())], [(key, value)]), Counter(n)))
    })
}

/// A (result, count) pair of reload counters.
fn results<'a>(ok: &'a AtomicU64, failed: &'a AtomicU64) -> [(&'static str, u64); 2] {
    [("success", ok), ("failure", failed)].map(|(r, n)| (r, n.load(Ordering::Relaxed)))
}

/// The labels of one certificate in service: whose, its role, subject and
/// serial.
fn cert_labels<'a>(
    owner: (&'static str, &'a str),
    role: &'static str,
    c: &'a CertInfo,
) -> [(&'static str, &'a str); 4] {
    [
        owner,
        ("role", role),
        ("subject", &c.subject),
        ("serial", &c.serial),
    ]
}

/// Reads every metric at scrape time.
#[derive(Debug)]
struct Scrape(Arc<ProxyState>);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        enc.encode_descriptor(
            "build",
            "Build information: the running version.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", VERSION)])?;
        listener_families(&mut enc, &state.listeners)?;
        tls_families(&mut enc, state)?;
        if let Some(topology) = &state.topology {
            topology_families(&mut enc, topology)?;
        }
        tls_session_families(&mut enc, &state.listeners)
    }
}

/// What each listener's sessions counted.
fn listener_families(
    enc: &mut DescriptorEncoder<'_>,
    listeners: &[Arc<ListenerState>],
) -> fmt::Result {
    family(
        enc,
        "connections",
        "Connections finished, by listener and outcome label.",
        by_listener(listeners, "outcome", ListenerMetrics::outcomes),
    )?;
    family(
        enc,
        "redirects",
        "Clients sent elsewhere by the failover redirect, by listener and style (error: the ERR packet instead of a session; redirect_url: the session tracker in the OK that ends authentication).",
        listeners.iter().flat_map(|l| {
            RedirectForm::ALL.map(|form| {
                (
                    [("listener", l.name()), ("style", form.label())],
                    Counter(l.metrics.redirects(form)),
                )
            })
        }),
    )?;
    family(
        enc,
        "active_sessions",
        "Sessions in progress, by listener.",
        listeners
            .iter()
            .map(|l| ([("listener", l.name())], Gauge(l.metrics.active()))),
    )?;
    family(
        enc,
        "handshake_duration_seconds",
        "Time from accept to the backend's authentication OK, for sessions that reached the relay phase.",
        listeners
            .iter()
            .map(|l| ([("listener", l.name())], Histogram(l.metrics.handshake()))),
    )?;
    family(
        enc,
        "tls_failures",
        "Failed TLS handshakes, by listener and reason.",
        by_listener(listeners, "reason", ListenerMetrics::tls_failures),
    )?;
    family(
        enc,
        "backend_connect_errors",
        "Failed connects to a backend, by listener and backend.",
        by_listener(
            listeners,
            "backend",
            ListenerMetrics::backend_connect_errors,
        ),
    )?;
    family(
        enc,
        "bytes",
        "Bytes relayed after authentication, by listener and direction, counted as they are written.",
        listeners.iter().flat_map(|l| {
            let t = l.metrics.bytes().snapshot();
            [("client_to_backend", t.up), ("backend_to_client", t.down)].map(|(direction, n)| {
                ([("listener", l.name()), ("direction", direction)], Counter(n))
            })
        }),
    )
}

/// The TLS material in service (expiry: alert well before these) and what
/// reloads did to it, per listener and per backend with outbound TLS.
fn tls_families(enc: &mut DescriptorEncoder<'_>, state: &ProxyState) -> fmt::Result {
    // One snapshot of the material in service each: the families borrow
    // their labels from it.
    let server: Vec<_> = state
        .listeners
        .iter()
        .filter_map(|l| {
            let rt = l.runtime.tls.as_ref()?;
            Some((l.name(), rt, rt.material.load()))
        })
        .collect();
    let client: Vec<_> = state
        .backends
        .iter()
        .filter_map(|b| {
            let rt = b.tls.as_ref()?;
            Some((b.config.name.as_str(), rt, rt.load()))
        })
        .collect();
    family(
        enc,
        "certificate_not_after_seconds",
        "Not-after of the certificates each listener has in service (role server: the one it presents; role ca: the CAs client certificates are checked against), as a Unix timestamp.",
        server.iter().flat_map(|(l, _, tls)| {
            let cas = tls.cas.iter().map(|c| ("ca", c));
            let certs = std::iter::once(("server", &tls.leaf)).chain(cas);
            certs.map(move |(role, c)| (cert_labels(("listener", *l), role, c), Gauge(c.not_after)))
        }),
    )?;
    family(
        enc,
        "crl_next_update_seconds",
        "Next-update of each CRL a listener checks client certificates against, as a Unix timestamp.",
        server.iter().flat_map(|(l, _, tls)| {
            tls.crls.iter().filter_map(move |crl| {
                Some(([("listener", *l), ("issuer", crl.issuer.as_str())], Gauge(crl.next_update?)))
            })
        }),
    )?;
    family(
        enc,
        "tls_reloads",
        "TLS material reloads that built new material (success) or kept the old in service (failure), by listener.",
        server.iter().flat_map(|(l, rt, _)| {
            results(&rt.material.reloads_ok, &rt.material.reloads_failed)
                .map(|(result, n)| ([("listener", *l), ("result", result)], Counter(n)))
        }),
    )?;
    family(
        enc,
        "backend_certificate_not_after_seconds",
        "Not-after of the outbound TLS certificates of each backend (role client: the certificate portcullis presents; role ca: the CAs the backend's certificate is checked against), as a Unix timestamp.",
        client.iter().flat_map(|(b, _, tls)| {
            let cas = tls.cas.iter().map(|c| ("ca", c));
            let certs = tls.leaf.iter().map(|c| ("client", c)).chain(cas);
            certs.map(move |(role, c)| (cert_labels(("backend", *b), role, c), Gauge(c.not_after)))
        }),
    )?;
    family(
        enc,
        "backend_tls_reloads",
        "Reloads of a backend's outbound TLS material that put new material in service (success) or kept the old (failure).",
        client.iter().flat_map(|(b, rt, _)| {
            results(&rt.reloads_ok, &rt.reloads_failed)
                .map(|(result, n)| ([("backend", *b), ("result", result)], Counter(n)))
        }),
    )
}

/// The monitor's view of the backends (with a `[monitor]`).
fn topology_families(enc: &mut DescriptorEncoder<'_>, topology: &Topology) -> fmt::Result {
    family(
        enc,
        "backend_role",
        "The monitor's classification of each backend: 1 for its current role, 0 for the others.",
        topology.backends.iter().flat_map(|b| {
            let (name, role) = (b.backend.config.name.as_str(), b.health.load().role);
            Role::ALL.map(|r| {
                (
                    [("backend", name), ("role", r.label())],
                    Gauge(i64::from(r == role)),
                )
            })
        }),
    )?;
    family(
        enc,
        "backend_replication_lag_seconds",
        "Seconds_Behind_Master of each replicating backend, as the monitor last read it.",
        topology.backends.iter().filter_map(|b| {
            let lag = b.health.load().lag_seconds?;
            Some((
                [("backend", b.backend.config.name.as_str())],
                Gauge(lag as i64),
            ))
        }),
    )?;
    // One unlabeled sample.
    let mut m = enc.encode_descriptor(
        "primary_changes",
        "Times the primary changed (to another backend, or to none), monitor or pin.",
        None,
        MetricType::Counter,
    )?;
    Counter(topology.changes.load(Ordering::Relaxed)).encode(&mut m)
}

/// What happened to the TLS listeners' live material and sessions. (After
/// the topology: families keep the order they were added in, so the text
/// stays the same from release to release.)
fn tls_session_families(
    enc: &mut DescriptorEncoder<'_>,
    listeners: &[Arc<ListenerState>],
) -> fmt::Result {
    let tls: Vec<_> = listeners
        .iter()
        .filter_map(|l| Some((l.name(), l.runtime.tls.as_ref()?)))
        .collect();
    family(
        enc,
        "tls_loaded_timestamp_seconds",
        "When the TLS material in service was loaded, by listener, as a Unix timestamp.",
        tls.iter()
            .map(|(l, rt)| ([("listener", *l)], Gauge(rt.material.load().loaded_at))),
    )?;
    family(
        enc,
        "revoked_sessions",
        "Live sessions whose client certificate newly loaded CAs or CRLs refuse, by listener and action (closed, or kept with on_revoke = keep).",
        tls.iter().flat_map(|(l, rt)| {
            [("closed", &rt.revoked_closed), ("kept", &rt.revoked_kept)].map(|(action, n)| {
                ([("listener", *l), ("action", action)], Counter(n.load(Ordering::Relaxed)))
            })
        }),
    )
}

/// Pins the whole OpenMetrics text of a small proxy: two listeners (one
/// with TLS and a CRL), a backend with outbound TLS, a topology, and some
/// recorded outcomes. Certificates have fixed dates and serials, so the
/// only value that depends on the run is when the material was loaded.
#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevocationReason, RevokedCertParams, SerialNumber,
    };

    use crate::outcome::{Finished, SessionError};
    use crate::preflight::Preflight;
    use crate::session::SessionInfo;
    use crate::Proxy;

    fn record(
        l: &crate::state::ListenerState,
        info: &SessionInfo,
        result: Result<Finished, SessionError>,
    ) {
        crate::outcome::record_session(&l.metrics, info, &result, "db1");
    }

    fn encode(state: &Arc<crate::state::ProxyState>) -> String {
        super::encode(state)
    }

    fn write(dir: &Path, name: &str, content: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn leaf(
        cn: &str,
        serial: u64,
        eku: ExtendedKeyUsagePurpose,
        issuer: &CertifiedIssuer<'static, KeyPair>,
    ) -> (String, String) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 6, 1);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the PKI and returns the config.
    fn config(dir: &Path) -> Preflight {
        let mut ca = CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Pin CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.serial_number = Some(SerialNumber::from(1));
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let (server, server_key) = leaf("localhost", 10, ExtendedKeyUsagePurpose::ServerAuth, &ca);
        let (client, client_key) = leaf("proxy", 11, ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 2),
            next_update: rcgen::date_time_ymd(2098, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(99),
                revocation_time: rcgen::date_time_ymd(2020, 1, 2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        let toml = format!(
            "[monitor]\nuser = \"mon\"\npassword = \"mon-pass\"\n\n\
             [[backend]]\nname = \"db1\"\naddress = \"127.0.0.1:1\"\n\
             [backend.tls]\nca = {ca:?}\ncert = {client:?}\nkey = {client_key:?}\nserver_name = \"localhost\"\n\n\
             [[backend]]\nname = \"db2\"\naddress = \"127.0.0.1:2\"\n\n\
             [[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\nroute = \"db1\"\n\
             [listener.tls]\ncert = {server:?}\nkey = {server_key:?}\nca = {ca:?}\ncrl = [{crl:?}]\n\n\
             [[listener]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\nroute = \"primary\"\n",
            ca = write(dir, "ca.pem", &ca.pem()),
            client = write(dir, "client.pem", &client),
            client_key = write(dir, "client-key.pem", &client_key),
            server = write(dir, "server.pem", &server),
            server_key = write(dir, "server-key.pem", &server_key),
            crl = write(dir, "crl.pem", &crl.pem().unwrap()),
        );
        Preflight::from_toml(&toml, &dir.join("portcullis.toml"), dir)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    fn handshake(ms: u64) -> SessionInfo {
        SessionInfo {
            handshake_done: Some(Duration::from_millis(ms)),
            ..SessionInfo::default()
        }
    }

    #[tokio::test]
    async fn exposition_text_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::bind(config(dir.path())).unwrap();
        let state = proxy.state();
        let (public, plain) = (&state.listeners[0], &state.listeners[1]);
        assert_eq!((public.name(), plain.name()), ("public", "plain"));

        record(public, &handshake(3), Ok(Finished::Relayed));
        let told_redirect_url = SessionInfo {
            redirect_url: Some("mariadb://db2:3306".into()),
            ..handshake(700)
        };
        record(public, &told_redirect_url, Ok(Finished::Relayed));
        record(
            public,
            &SessionInfo::default(),
            Ok(Finished::Redirected {
                target: "db2:3306".into(),
            }),
        );
        record(
            public,
            &SessionInfo::default(),
            Err(SessionError::TlsHandshake {
                reason: crate::tls::TlsFailure::UnknownCa,
                source: std::io::Error::other("bad certificate"),
            }),
        );
        let on_db2 = SessionInfo {
            backend: Some("db2".into()),
            ..SessionInfo::default()
        };
        record(public, &on_db2, Err(SessionError::BackendTlsRefused));
        record(
            public,
            &SessionInfo::default(),
            Err(SessionError::BackendTlsRefused),
        );
        record(
            plain,
            &handshake(20),
            Ok(Finished::AuthRejected { code: 1045 }),
        );
        record(
            plain,
            &SessionInfo::default(),
            Err(SessionError::NoBackend("no primary".into())),
        );
        let _active = plain.metrics.session_started();

        let tls = public.runtime.tls.as_ref().unwrap();
        tls.material.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tls.revoked_closed.fetch_add(2, Ordering::Relaxed);
        tls.revoked_kept.fetch_add(1, Ordering::Relaxed);
        let backend_tls = state.backends[0].tls.as_ref().unwrap();
        backend_tls.reloads_ok.fetch_add(3, Ordering::Relaxed);
        let topology = state.topology.as_ref().unwrap();
        topology.backends[1]
            .health
            .store(Arc::new(crate::monitor::Health {
                role: crate::monitor::Role::Replica,
                lag_seconds: Some(7),
                ..Default::default()
            }));
        topology.pin(Some("db1".into())).unwrap();

        let loaded_at = tls.material.load().loaded_at;
        assert_eq!(
            encode(&state),
            EXPECTED.replace("LOADED_AT", &loaded_at.to_string())
        );
    }

    const EXPECTED: &str = r#"# HELP portcullis_build Build information: the running version.
# TYPE portcullis_build info
portcullis_build_info{version="0.1.0"} 1
# HELP portcullis_connections Connections finished, by listener and outcome label.
# TYPE portcullis_connections counter
portcullis_connections_total{listener="public",outcome="backend_tls_not_offered"} 2
portcullis_connections_total{listener="public",outcome="redirected"} 1
portcullis_connections_total{listener="public",outcome="relayed"} 2
portcullis_connections_total{listener="public",outcome="tls_handshake_failed"} 1
portcullis_connections_total{listener="plain",outcome="auth_rejected"} 1
portcullis_connections_total{listener="plain",outcome="no_backend"} 1
# HELP portcullis_redirects Clients sent elsewhere by the failover redirect, by listener and style (error: the ERR packet instead of a session; redirect_url: the session tracker in the OK that ends authentication).
# TYPE portcullis_redirects counter
portcullis_redirects_total{listener="public",style="error"} 1
portcullis_redirects_total{listener="public",style="redirect_url"} 1
portcullis_redirects_total{listener="plain",style="error"} 0
portcullis_redirects_total{listener="plain",style="redirect_url"} 0
# HELP portcullis_active_sessions Sessions in progress, by listener.
# TYPE portcullis_active_sessions gauge
portcullis_active_sessions{listener="public"} 0
portcullis_active_sessions{listener="plain"} 1
# HELP portcullis_handshake_duration_seconds Time from accept to the backend's authentication OK, for sessions that reached the relay phase.
# TYPE portcullis_handshake_duration_seconds histogram
portcullis_handshake_duration_seconds_sum{listener="public"} 0.703
portcullis_handshake_duration_seconds_count{listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="0.0005",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.001",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.0025",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.005",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.01",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.025",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.05",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.1",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.25",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.5",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="1.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="2.5",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="5.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="10.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="+Inf",listener="public"} 2
portcullis_handshake_duration_seconds_sum{listener="plain"} 0.02
portcullis_handshake_duration_seconds_count{listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.0005",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.001",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.0025",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.005",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.01",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.025",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.05",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.1",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.25",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.5",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="1.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="2.5",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="5.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="10.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="+Inf",listener="plain"} 1
# HELP portcullis_tls_failures Failed TLS handshakes, by listener and reason.
# TYPE portcullis_tls_failures counter
portcullis_tls_failures_total{listener="public",reason="unknown_ca"} 1
# HELP portcullis_backend_connect_errors Failed connects to a backend, by listener and backend.
# TYPE portcullis_backend_connect_errors counter
portcullis_backend_connect_errors_total{listener="public",backend="db1"} 1
portcullis_backend_connect_errors_total{listener="public",backend="db2"} 1
# HELP portcullis_bytes Bytes relayed after authentication, by listener and direction, counted as they are written.
# TYPE portcullis_bytes counter
portcullis_bytes_total{listener="public",direction="client_to_backend"} 0
portcullis_bytes_total{listener="public",direction="backend_to_client"} 0
portcullis_bytes_total{listener="plain",direction="client_to_backend"} 0
portcullis_bytes_total{listener="plain",direction="backend_to_client"} 0
# HELP portcullis_certificate_not_after_seconds Not-after of the certificates each listener has in service (role server: the one it presents; role ca: the CAs client certificates are checked against), as a Unix timestamp.
# TYPE portcullis_certificate_not_after_seconds gauge
portcullis_certificate_not_after_seconds{listener="public",role="server",subject="CN=localhost",serial="0a"} 4083955200
portcullis_certificate_not_after_seconds{listener="public",role="ca",subject="CN=Pin CA",serial="01"} 4102358400
# HELP portcullis_crl_next_update_seconds Next-update of each CRL a listener checks client certificates against, as a Unix timestamp.
# TYPE portcullis_crl_next_update_seconds gauge
portcullis_crl_next_update_seconds{listener="public",issuer="CN=Pin CA"} 4039372800
# HELP portcullis_tls_reloads TLS material reloads that built new material (success) or kept the old in service (failure), by listener.
# TYPE portcullis_tls_reloads counter
portcullis_tls_reloads_total{listener="public",result="success"} 0
portcullis_tls_reloads_total{listener="public",result="failure"} 1
# HELP portcullis_backend_certificate_not_after_seconds Not-after of the outbound TLS certificates of each backend (role client: the certificate portcullis presents; role ca: the CAs the backend's certificate is checked against), as a Unix timestamp.
# TYPE portcullis_backend_certificate_not_after_seconds gauge
portcullis_backend_certificate_not_after_seconds{backend="db1",role="client",subject="CN=proxy",serial="0b"} 4083955200
portcullis_backend_certificate_not_after_seconds{backend="db1",role="ca",subject="CN=Pin CA",serial="01"} 4102358400
# HELP portcullis_backend_tls_reloads Reloads of a backend's outbound TLS material that put new material in service (success) or kept the old (failure).
# TYPE portcullis_backend_tls_reloads counter
portcullis_backend_tls_reloads_total{backend="db1",result="success"} 3
portcullis_backend_tls_reloads_total{backend="db1",result="failure"} 0
# HELP portcullis_backend_role The monitor's classification of each backend: 1 for its current role, 0 for the others.
# TYPE portcullis_backend_role gauge
portcullis_backend_role{backend="db1",role="primary"} 0
portcullis_backend_role{backend="db1",role="replica"} 0
portcullis_backend_role{backend="db1",role="down"} 0
portcullis_backend_role{backend="db1",role="unknown"} 1
portcullis_backend_role{backend="db2",role="primary"} 0
portcullis_backend_role{backend="db2",role="replica"} 1
portcullis_backend_role{backend="db2",role="down"} 0
portcullis_backend_role{backend="db2",role="unknown"} 0
# HELP portcullis_backend_replication_lag_seconds Seconds_Behind_Master of each replicating backend, as the monitor last read it.
# TYPE portcullis_backend_replication_lag_seconds gauge
portcullis_backend_replication_lag_seconds{backend="db2"} 7
# HELP portcullis_primary_changes Times the primary changed (to another backend, or to none), monitor or pin.
# TYPE portcullis_primary_changes counter
portcullis_primary_changes_total 1
# HELP portcullis_tls_loaded_timestamp_seconds When the TLS material in service was loaded, by listener, as a Unix timestamp.
# TYPE portcullis_tls_loaded_timestamp_seconds gauge
portcullis_tls_loaded_timestamp_seconds{listener="public"} LOADED_AT
# HELP portcullis_revoked_sessions Live sessions whose client certificate newly loaded CAs or CRLs refuse, by listener and action (closed, or kept with on_revoke = keep).
# TYPE portcullis_revoked_sessions counter
portcullis_revoked_sessions_total{listener="public",action="closed"} 2
portcullis_revoked_sessions_total{listener="public",action="kept"} 1
# EOF
"#;
}
