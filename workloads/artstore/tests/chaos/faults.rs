//! The fault schedule: derived from the seed alone, printed before the run, then applied one
//! fault at a time while the workload runs. Every round holds every (target, kind) pair once,
//! in an order and with durations drawn from the seed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::archive::{self, Archive};
use crate::procs::Proc;
use crate::services::{self, Services};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Ingester,
    Element(usize),
    QueryNode,
    Postgres,
    Redis,
    SeaweedFs,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ingester => write!(f, "ingester"),
            Target::Element(i) => write!(f, "{}", archive::ELEMENTS[*i]),
            Target::QueryNode => write!(f, "query-node"),
            Target::Postgres => write!(f, "postgresql"),
            Target::Redis => write!(f, "redis"),
            Target::SeaweedFs => write!(f, "seaweedfs"),
        }
    }
}

/// Where a connection drop happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    ClientIngester,
    ClientQuery,
    /// Ingester or query node to an element.
    ToElement(usize),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::ClientIngester => write!(f, "client→ingester"),
            Hop::ClientQuery => write!(f, "client→query-node"),
            Hop::ToElement(i) => write!(f, "→{}", archive::ELEMENTS[*i]),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `kill -9`, down for `hold`, started again.
    Kill,
    /// SIGSTOP for `hold`, then SIGCONT.
    Freeze,
    /// SIGTERM (graceful), started again at once.
    Restart,
    /// Every open connection on the hop cut.
    Drop(Hop),
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub target: Option<Target>,
    pub kind: Kind,
    pub hold: Duration,
    /// Pause before the next fault.
    pub gap: Duration,
}

impl Fault {
    pub fn label(&self) -> String {
        match (self.kind, self.target) {
            (Kind::Drop(hop), _) => format!("drop {hop}"),
            (Kind::Kill, Some(t)) => format!("kill -9 {t}"),
            (Kind::Freeze, Some(t)) => format!("freeze {t}"),
            (Kind::Restart, Some(t)) => format!("restart {t}"),
            (_, None) => "?".into(),
        }
    }

    /// The kind as counted in the report.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Kill => "kill -9",
            Kind::Freeze => "freeze",
            Kind::Restart => "restart",
            Kind::Drop(_) => "drop connections",
        }
    }
}

const ARCHIVE: [Target; 4] = [
    Target::Ingester,
    Target::Element(0),
    Target::Element(1),
    Target::QueryNode,
];
const SERVICES: [Target; 3] = [Target::Postgres, Target::Redis, Target::SeaweedFs];
const HOPS: [Hop; 4] = [
    Hop::ClientIngester,
    Hop::ClientQuery,
    Hop::ToElement(0),
    Hop::ToElement(1),
];

/// Rounds of every fault until the planned time reaches `minutes` (at least one round).
pub fn schedule(seed: u64, minutes: f64) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut planned = Duration::ZERO;
    let budget = Duration::from_secs_f64(minutes * 60.0);
    loop {
        let mut round: Vec<(Option<Target>, Kind)> = Vec::new();
        for t in ARCHIVE.iter().chain(&SERVICES) {
            round.push((Some(*t), Kind::Kill));
            round.push((Some(*t), Kind::Freeze));
        }
        for t in ARCHIVE {
            round.push((Some(t), Kind::Restart));
        }
        for h in HOPS {
            round.push((None, Kind::Drop(h)));
        }
        round.shuffle(&mut rng);
        for (target, kind) in round {
            let hold = match (kind, target) {
                // Long enough, often, to outlast the ingester's 10 s idle timeout.
                (Kind::Freeze, Some(Target::Element(_) | Target::SeaweedFs)) => {
                    Duration::from_millis(rng.random_range(2_000..14_000))
                }
                (Kind::Freeze, _) => Duration::from_millis(rng.random_range(1_000..7_000)),
                (Kind::Kill, _) => Duration::from_millis(rng.random_range(0..3_000)),
                _ => Duration::ZERO,
            };
            let gap = Duration::from_millis(rng.random_range(500..2_500));
            planned += hold + gap + Duration::from_secs(1);
            out.push(Fault {
                target,
                kind,
                hold,
                gap,
            });
        }
        if planned >= budget {
            return out;
        }
    }
}

/// Counts per kind and per target, for the report.
pub fn counts(faults: &[Fault]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in faults {
        *m.entry(f.kind_name().to_string()).or_default() += 1;
    }
    m
}

pub struct Chaos<'a> {
    pub services: &'a mut Services,
    pub archive: &'a mut Archive,
    /// Archive processes found dead that the schedule did not kill (restarted, as Kubernetes
    /// would restart a crashed container).
    pub unplanned_exits: Vec<String>,
}

impl Chaos<'_> {
    fn proc(&mut self, target: Target) -> &mut Proc {
        match target {
            Target::Ingester => &mut self.archive.ingester,
            Target::Element(i) => &mut self.archive.elements[i].proc,
            Target::QueryNode => &mut self.archive.query,
            Target::Postgres => &mut self.services.postgres,
            Target::Redis => &mut self.services.redis,
            Target::SeaweedFs => &mut self.services.seaweedfs,
        }
    }

    /// Waits until `target` serves again after a start.
    async fn wait_up(&mut self, target: Target) -> Result<()> {
        let within = Duration::from_secs(60);
        match target {
            Target::Postgres => {
                services::postgres_ready(&self.services.database_url("postgres"), within).await
            }
            Target::Redis => services::redis_ready(&self.services.redis_url(), within).await,
            Target::SeaweedFs => services::s3_ready(&self.services.s3_endpoint(), within).await,
            _ => {
                let url = match target {
                    Target::Ingester => self.archive.ingester_url.clone(),
                    Target::Element(i) => self.archive.elements[i].url.clone(),
                    _ => self.archive.query_url.clone(),
                };
                archive::healthy(&url, within).await
            }
        }
    }

    async fn start_again(&mut self, target: Target) -> Result<()> {
        for attempt in 0..5 {
            self.proc(target).restart()?;
            match self.wait_up(target).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 4 => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        bail!("{target} did not come back")
    }

    pub async fn apply(&mut self, fault: &Fault) -> Result<()> {
        match (fault.kind, fault.target) {
            (Kind::Drop(hop), _) => match hop {
                Hop::ClientIngester => self.archive.ingester_proxy.cut_all(),
                Hop::ClientQuery => self.archive.query_proxy.cut_all(),
                Hop::ToElement(i) => self.archive.elements[i].proxy.cut_all(),
            },
            (Kind::Kill, Some(t)) => {
                self.proc(t).kill9();
                tokio::time::sleep(fault.hold).await;
                self.start_again(t).await?;
            }
            (Kind::Freeze, Some(t)) => {
                self.proc(t).freeze();
                tokio::time::sleep(fault.hold).await;
                self.proc(t).thaw();
            }
            (Kind::Restart, Some(t)) => {
                self.proc(t).terminate(Duration::from_secs(15));
                self.start_again(t).await?;
            }
            (_, None) => bail!("fault without a target"),
        }
        Ok(())
    }

    /// Restarts any archive process or service that is not running (and says which).
    pub async fn supervise(&mut self) -> Result<()> {
        for t in SERVICES.iter().chain(&ARCHIVE) {
            if !self.proc(*t).running() {
                self.unplanned_exits.push(t.to_string());
                self.start_again(*t).await?;
            }
        }
        Ok(())
    }

    /// Everything thawed and running, every archive process ready.
    pub async fn settle(&mut self) -> Result<()> {
        for t in SERVICES.iter().chain(&ARCHIVE) {
            self.proc(*t).thaw();
        }
        self.supervise().await?;
        for url in self.archive.direct_urls() {
            archive::ready(&url, Duration::from_secs(120)).await?;
        }
        Ok(())
    }

    /// Applies the schedule in order, printing each fault as it starts.
    pub async fn run(&mut self, faults: &[Fault], started: Instant) -> Result<()> {
        for (i, fault) in faults.iter().enumerate() {
            println!(
                "[chaos {:>6.1}s] fault {}/{}: {} (hold {:.1}s)",
                started.elapsed().as_secs_f64(),
                i + 1,
                faults.len(),
                fault.label(),
                fault.hold.as_secs_f64()
            );
            self.apply(fault).await?;
            tokio::time::sleep(fault.gap).await;
            self.supervise().await?;
        }
        Ok(())
    }
}
