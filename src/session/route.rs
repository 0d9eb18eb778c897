//! Where a new connection goes: its backend (from the listener's route and
//! the topology at this moment) or, in failover mode, the address it is
//! redirected to.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::BackendRuntime;
use crate::config::{OnPrimaryChange, TopologyRoute};
use crate::failover::FailoverTarget;
use crate::listener::{ListenerRuntime, RouteRuntime};
use crate::monitor::Pick;

/// The `host:port` a redirected client is sent to: the configured target,
/// or for `"primary"` the current primary's `advertise` address.
pub(super) fn redirect_target(
    listener: &ListenerRuntime,
    target: FailoverTarget,
) -> Result<String, String> {
    if let FailoverTarget::Address(target) = target {
        return Ok(target);
    }
    let topology = listener
        .topology
        .as_ref()
        .ok_or("failover_target = \"primary\" without a [monitor]")?;
    let name = topology
        .primary()
        .ok_or("no primary is known to redirect to; try again later")?;
    topology
        .backend(&name)
        .and_then(|m| m.backend.config.advertise.clone())
        .ok_or_else(|| format!("the primary {name:?} has no advertise address to redirect to"))
}

/// Picks the backend for a new connection; with `on_primary_change =
/// "close"`, a `primary` route also returns the tenure token that ends the
/// session when the primary changes. `Err` says why no backend is
/// available, for the client.
pub(super) async fn resolve_route(
    listener: &ListenerRuntime,
) -> Result<(Arc<BackendRuntime>, Option<CancellationToken>), String> {
    let (kind, topology) = match &listener.route {
        RouteRuntime::Fixed(b) => return Ok((b.clone(), None)),
        RouteRuntime::Topology { kind, topology } => (kind, topology),
    };
    let cfg = &listener.config;
    match kind {
        TopologyRoute::Primary => {
            // The token first: a change after this closes the session
            // (too early at worst, never too late).
            let tenure = topology.tenure();
            let mut primary = topology.watch_primary();
            let name =
                match tokio::time::timeout(cfg.primary_wait, primary.wait_for(|p| p.is_some()))
                    .await
                {
                    Ok(Ok(p)) => p.clone().unwrap_or_default(),
                    _ => {
                        return Err(format!(
                            "no primary is available (waited {:?}); try again later",
                            cfg.primary_wait
                        ))
                    }
                };
            let backend = topology
                .backend(&name)
                .map(|m| m.backend.clone())
                .ok_or_else(|| format!("primary {name:?} is not a configured backend"))?;
            let tenure = (cfg.on_primary_change == OnPrimaryChange::Close).then_some(tenure);
            Ok((backend, tenure))
        }
        TopologyRoute::Replica => topology
            .pick(Pick::Replica, cfg.max_replica_lag)
            .map(|b| (b, None))
            .ok_or_else(|| "no healthy replica is available; try again later".to_string()),
        TopologyRoute::Any => topology
            .pick(Pick::Any, None)
            .map(|b| (b, None))
            .ok_or_else(|| "no healthy backend is available; try again later".to_string()),
    }
}
