//! The `portcullis` binary: parse the command line, set up logging, load the
//! config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::admin::sessions::percent_encode;
use portcullis::admin::{client, AdminTarget, SessionList, Status};
use portcullis::handover::control::ControlServer;
use portcullis::handover::take::Taking;
use portcullis::handover::Port;
use portcullis::preflight::Preflight;
use portcullis::state::{Lifecycle, ProxyState};
use portcullis::{reload, Proxy, Shutdown};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// A MySQL/MariaDB-protocol TLS-terminating proxy with mutual certificate
/// authentication.
///
/// portcullis sits in front of a mariadbd, performs the MySQL STARTTLS
/// upgrade (greeting → SSLRequest → TLS on the same socket), checks client
/// certificates against a CA and its CRLs, and relays authentication to the
/// database untouched: users and passwords stay in MariaDB.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    /// The level filter is read from PORTCULLIS_LOG (default "info"),
    /// e.g. PORTCULLIS_LOG=portcullis=debug.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: bind every listener and proxy until stopped.
    ///
    /// Signals: SIGTERM drains (stops accepting, lets sessions finish up to
    /// `shutdown_timeout`, then closes the rest; a second SIGTERM or a
    /// SIGINT closes at once); SIGINT exits at once; SIGHUP re-reads the
    /// config and the TLS material, applies each listener's failover
    /// settings and TLS section (certificates, keys, CAs, CRLs and their
    /// settings), and logs every other change as applying at the next
    /// hand-over (an invalid file changes nothing).
    ///
    /// SIGUSR2 starts a successor: the same binary (as it is on disk now,
    /// e.g. after an upgrade) with `run --take-over` on the same config
    /// file, which takes over this process's listeners (needs
    /// `control_socket`).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets of the portcullis running on the
        /// config's `control_socket`: check the config in full (one that
        /// fails changes nothing), take every listener whose address it
        /// names, bind the others, serve, and tell the running process to
        /// stop accepting and drain.
        #[arg(long)]
        take_over: bool,
    },
    /// Validate a config file, including its TLS material and whether each
    /// listen address can be bound now, and exit.
    ///
    /// Exits 0 when the config is valid; otherwise prints every problem
    /// as FILE:LINE: MESSAGE and exits 1. An address in use by what may be
    /// this proxy, already running, is a warning.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running portcullis what it is doing, through its admin API,
    /// and print listeners, backends, certificates and CRLs as tables.
    Status {
        #[command(flatten)]
        api: AdminArgs,
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// List the open sessions of a running portcullis (id, listener,
    /// client, certificate, MySQL user, backend, age, bytes each way,
    /// state), through its admin API.
    Sessions {
        #[command(flatten)]
        api: AdminArgs,
        /// Only this listener's sessions.
        #[arg(long)]
        listener: Option<String>,
        /// Only sessions logged in as this MySQL user.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions whose client certificate has this subject
        /// (exactly as listed, e.g. "CN=app").
        #[arg(long)]
        subject: Option<String>,
        /// Print the JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Close one session of a running portcullis (its id as `portcullis
    /// sessions` lists it), with a TLS close_notify; it is logged and
    /// counted with the outcome `killed_by_admin`. Needs the right to make
    /// changes (the token, or the admin Unix socket).
    Kill {
        #[command(flatten)]
        api: AdminArgs,
        /// The session id.
        id: String,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin address: "127.0.0.1:9306", "[::1]:9306" or
    /// "unix:/run/portcullis/admin.sock".
    #[arg(long, default_value = portcullis::config::DEFAULT_ADMIN_ADDRESS)]
    admin: AdminTarget,
    /// File holding the admin bearer token (the `[admin] token_file`).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match Preflight::check(&config) {
            Ok(p) => {
                let (listeners, backends) = (p.config().listeners.len(), p.config().backends.len());
                probe_backends(p);
                println!(
                    "{}: OK ({listeners} listener(s), {backends} backend(s))",
                    config.display(),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("{} problem(s) found", e.problems.len());
                ExitCode::FAILURE
            }
        },
        Command::Status { api, json } => print_or_fail("status", status(&api, json)),
        Command::Sessions {
            api,
            listener,
            user,
            subject,
            json,
        } => {
            let query: Vec<String> = [("listener", listener), ("user", user), ("subject", subject)]
                .into_iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", percent_encode(&v?))))
                .collect();
            let path = if query.is_empty() {
                "/sessions".to_string()
            } else {
                format!("/sessions?{}", query.join("&"))
            };
            let out = admin_call(&api, hyper::Method::GET, &path).and_then(|text| {
                if json {
                    return Ok(text);
                }
                let list: SessionList = serde_json::from_str(&text).with_context(|| {
                    format!("{} sent a session list this version cannot read", api.admin)
                })?;
                Ok(list.render())
            });
            print_or_fail("sessions", out)
        }
        Command::Kill { api, id } => {
            let out = admin_call(&api, hyper::Method::DELETE, &format!("/sessions/{id}"))
                .map(|_| format!("session {id} killed\n"));
            print_or_fail("kill", out)
        }
        // Logs go to stderr: a fatal error is logged once, and not printed
        // again beside the log (nor outside it, with --log-format json).
        Command::Run { config, take_over } => match run(config, take_over, cli.log_format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The error and its causes on one line, `: `-separated, each text once.
/// An error whose message already ends with its cause's (thiserror's
/// `"…: {source}"` with the field also its `source()`) would otherwise
/// print the cause twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `check`'s last step: asks each backend the start-up probe's questions
/// ([`portcullis::probe`]) and logs what an operator must know (an account
/// that trusts portcullis's own OS user). A backend that cannot be asked is
/// a warning, not a failed check: it may simply not run yet.
fn probe_backends(p: Preflight) {
    let (config, material) = p.into_parts();
    let backends: Vec<_> = config
        .backends
        .iter()
        .cloned()
        .zip(material.backends)
        .map(|(b, tls)| std::sync::Arc::new(portcullis::backend::BackendRuntime::new(b, tls)))
        .collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot probe the backends: no runtime");
            return;
        }
    };
    let probes = portcullis::probe::report(&backends);
    let within = async { tokio::time::timeout(portcullis::probe::CHECK_TIMEOUT, probes).await };
    if runtime.block_on(within).is_err() {
        tracing::warn!(
            "the backends did not all answer the probe within {:?}",
            portcullis::probe::CHECK_TIMEOUT
        );
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, never in log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Prints a subcommand's output, or its error on one line.
fn print_or_fail(name: &str, out: anyhow::Result<String>) -> ExitCode {
    match out {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis {name}: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// One admin API request; the body of a successful answer, or the error
/// it gave.
fn admin_call(api: &AdminArgs, method: hyper::Method, path: &str) -> anyhow::Result<String> {
    let admin = &api.admin;
    let token = api
        .token_file
        .as_deref()
        .map(portcullis::config::read_admin_token)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (code, body) = runtime.block_on(client::request(admin, method, path, token.as_deref()))?;
    let text = String::from_utf8_lossy(&body);
    if !code.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        anyhow::bail!("{admin} answered {code}: {message}");
    }
    Ok(text.into_owned())
}

fn status(api: &AdminArgs, json: bool) -> anyhow::Result<String> {
    let text = admin_call(api, hyper::Method::GET, "/status")?;
    if json {
        return Ok(text);
    }
    let status: Status = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} sent a status document this version cannot read",
            api.admin
        )
    })?;
    Ok(status.render())
}

/// SIGHUP: re-read and validate the whole config; apply what can change at
/// runtime (failover settings, TLS material), or keep everything as it is
/// if the file is invalid. The reload logs what it did and did not apply.
fn reload(state: &portcullis::state::ProxyState) {
    tracing::info!(config = %state.config_path.display(), "SIGHUP: reloading the config and TLS material");
    // Err: the problems are logged, one event each.
    let _ = reload::reload_config(state, reload::Trigger::Signal);
}

fn run(path: PathBuf, take_over: bool, log_format: LogFormat) -> anyhow::Result<()> {
    portcullis::perm::warn_if_root();
    // Beside a running portcullis, the whole check (`portcullis check`'s):
    // a config that fails it changes nothing.
    let loaded = match take_over {
        true => Preflight::check(&path),
        false => Preflight::load(&path),
    };
    let preflight = match loaded {
        Ok(p) => p,
        Err(e) => {
            // One event per problem, as a reload logs them.
            for line in e.lines() {
                tracing::error!("invalid config: {line}");
            }
            let what = match take_over {
                true => "cannot take over (nothing changed)",
                false => "cannot start",
            };
            anyhow::bail!(
                "{what}: {} problem(s) in {}",
                e.problems.len(),
                path.display()
            );
        }
    };
    let control = preflight.config().control_socket.clone();
    let mut taking = match (take_over, &control) {
        (false, _) => None,
        (true, None) => anyhow::bail!(
            "cannot take over (nothing changed): {} has no control_socket, the socket both processes must name",
            path.display()
        ),
        (true, Some(c)) => Some(Taking::ask(c).context("cannot take over (nothing changed)")?),
    };
    // Sessions run on their own worker threads (`workers`); this thread
    // only accepts, watches files and handles signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let served = runtime.block_on(async move {
        let what = match take_over {
            true => "cannot take over (the running process keeps serving)",
            false => "cannot start",
        };
        let mut proxy = Proxy::bind_taking(preflight, taking.as_mut()).context(what)?;
        let port = proxy.handover_port();
        let state = proxy.state();
        let control = match (taking, control, port) {
            (None, Some(path), Some(port)) => {
                let server = ControlServer::start_first(&path, port).context(what)?;
                ready_when_serving(state.clone(), None, Some(server))
            }
            (Some(t), Some(path), Some(port)) => {
                for e in t.left() {
                    tracing::info!(address = %e.address, name = %e.name, "not in the new config: the running process closes it");
                }
                ready_when_serving(state.clone(), Some((t, path, port)), None)
            }
            _ => ready_when_serving(state.clone(), None, None),
        };
        signals(state, path, log_format)?;
        let (tx, rx) = tokio::sync::watch::channel(Shutdown::Run);
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: draining");
                    let _ = tx.send(Shutdown::Drain);
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    let _ = tx.send(Shutdown::Now);
                    return;
                }
            }
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("second signal: closing all sessions now");
            let _ = tx.send(Shutdown::Now);
        });
        proxy.run(rx).await;
        // The control socket stops with the proxy (its file stays when a
        // successor serves on it).
        control.abort();
        let _ = control.await;
        anyhow::Ok(())
    });
    // A hand-over still waiting for its successor is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Once the proxy serves: tells systemd, and for a process taking over,
/// tells the old process to drain and then serves the control socket in
/// its place. The task holds the control server until it is aborted.
fn ready_when_serving(
    state: Arc<ProxyState>,
    taking: Option<(Taking, PathBuf, Port)>,
    mut server: Option<ControlServer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lifecycle = state.watch_lifecycle();
        if lifecycle
            .wait_for(|l| *l == Lifecycle::Serving)
            .await
            .is_err()
        {
            return;
        }
        let took_over = taking.is_some();
        if let Some((taking, path, port)) = taking {
            match tokio::task::spawn_blocking(move || taking.finish()).await {
                Ok(Ok(pid)) => tracing::info!(
                    old = pid,
                    "took over: the old process no longer accepts and drains"
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "take-over: the old process was not told to drain")
                }
                Err(e) => {
                    tracing::error!(error = %e, "take-over: the old process was not told to drain")
                }
            }
            match ControlServer::start(&path, port) {
                Ok(s) => server = Some(s),
                Err(e) => tracing::error!(error = %e, "no further hand-over is possible"),
            }
        }
        portcullis::handover::notify::ready(took_over);
        let _keep = server;
        std::future::pending::<()>().await;
    })
}

/// SIGHUP reloads; SIGUSR2 starts a successor that takes over.
fn signals(state: Arc<ProxyState>, path: PathBuf, log_format: LogFormat) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let state = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reload(&state)).await {
                tracing::error!(error = %e, "reload failed");
            }
        }
    });
    let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            spawn_successor(&path, log_format);
        }
    });
    Ok(())
}

/// SIGUSR2: `portcullis run --take-over` on the same config, with the
/// binary now at this one's path (after an upgrade, the new one). Its
/// logs go where this process's go; its end, if it ends while this
/// process runs (a config that fails the check), is logged here.
fn spawn_successor(path: &std::path::Path, log_format: LogFormat) {
    let exe = match std::env::current_exe() {
        Ok(p) => {
            // The file this process was started from, replaced by an
            // upgrade, reads as "… (deleted)"; the new one is at the path.
            let text = p.to_string_lossy();
            PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGUSR2: cannot find this binary; no successor started");
            return;
        }
    };
    let format = match log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let child = std::process::Command::new(&exe)
        .args(["--log-format", format, "run", "--take-over", "--config"])
        .arg(path)
        .spawn();
    match child {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), binary = %exe.display(), "SIGUSR2: started a successor to take over");
            std::thread::spawn(move || match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    tracing::warn!(status = %s, "the successor exited; this process keeps serving unless it took over")
                }
                Err(e) => tracing::warn!(error = %e, "cannot wait for the successor"),
            });
        }
        Err(e) => {
            tracing::error!(error = %e, binary = %exe.display(), "SIGUSR2: cannot start a successor")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("listener \"public\": cannot listen on 127.0.0.1:3307: {source}")]
    struct BindLike {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let os = std::io::Error::from_raw_os_error(98);
        let e = anyhow::Error::new(BindLike { source: os }).context("cannot start");
        assert_eq!(
            one_line(&e),
            format!(
                "cannot start: listener \"public\": cannot listen on 127.0.0.1:3307: {}",
                std::io::Error::from_raw_os_error(98)
            )
        );
        // A cause the message does not include is still appended.
        let e = anyhow::anyhow!("disk on fire").context("cannot start");
        assert_eq!(one_line(&e), "cannot start: disk on fire");
    }
}
