//! Leader election with a coordination/v1 Lease: one replica reconciles, the others wait. The
//! holder renews every `renew_every`; another replica takes over once `duration` has passed
//! without a renewal. Writes carry the resourceVersion they read, so two candidates can never
//! both win the same round.
//!
//! The holder gives up once `renew_deadline` (shorter than `duration`) has passed since the
//! start of its last successful renewal, as client-go's leader election does: it stops
//! reconciling before any other replica may consider the lease expired, even when the API
//! server cannot be reached at all. `kube-lease-manager` (0.13, kube 5) was considered: on
//! renewal errors its watch channel keeps saying "leader" until a later read succeeds, so it
//! has no renew deadline; hence this small module.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    pub duration: Duration,
    /// The holder stops leading when it could not renew for this long; less than `duration`.
    pub renew_deadline: Duration,
    /// Time between renewals (and between attempts while another replica leads).
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: "artstore-operator".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }

    /// The settings leader election relies on: a renewal every so often, given up on well
    /// before the lease runs out.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_every >= self.renew_deadline {
            return Err("renew_every must be shorter than renew_deadline".into());
        }
        if self.renew_deadline >= self.duration {
            return Err("renew_deadline must be shorter than the lease duration".into());
        }
        Ok(())
    }
}

/// Why a holder stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease.
    TakenOver,
    /// No renewal succeeded within the renew deadline.
    DeadlinePassed,
}

/// Whether a lease held by someone else has run out at `now`.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.0.as_second().saturating_add(secs) < now.as_second()
}

/// One round: take or renew the lease if free, expired or ours. `Ok(true)` while we hold it.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    let Some(current) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !free && !expired(&spec, now) {
        return Ok(false);
    }
    let mut next = current.clone();
    let transitions = spec.lease_transitions.unwrap_or(0);
    next.spec = Some(LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(duration),
        acquire_time: if ours {
            spec.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..spec
    });
    // `replace` sends the resourceVersion we read: a concurrent winner makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the lease; returns when the winning round started (the
/// renew deadline counts from there: the lease's renewTime is no later).
pub async fn acquire(client: Client, cfg: &LeaseConfig) -> Instant {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        let started = Instant::now();
        match try_acquire(&api, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "leading");
                return started;
            }
            Ok(false) => tracing::debug!(lease = %cfg.name, "another replica leads"),
            Err(e) => tracing::warn!(error = %e, "lease round failed"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the lease acquired at `renewed` until it is lost: taken by another replica, or not
/// renewed within `renew_deadline` (a request still in flight then is abandoned). The caller
/// must stop reconciling when this returns.
pub async fn hold(client: Client, cfg: &LeaseConfig, mut renewed: Instant) -> Lost {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        let deadline = renewed + cfg.renew_deadline;
        tokio::time::sleep_until((Instant::now() + cfg.renew_every).min(deadline)).await;
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, try_acquire(&api, cfg)).await {
            Ok(Ok(true)) => renewed = started,
            Ok(Ok(false)) => {
                tracing::error!(lease = %cfg.name, "lease taken by another replica");
                return Lost::TakenOver;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => {}
        }
        if Instant::now() >= deadline && renewed < started {
            tracing::error!(lease = %cfg.name, "could not renew within the renew deadline");
            return Lost::DeadlinePassed;
        }
    }
}

/// Gives the lease up on shutdown so a standby takes over at once.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    if let Some(spec) = lease
        .spec
        .as_mut()
        .filter(|s| s.holder_identity.as_deref() == Some(cfg.identity.as_str()))
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}
