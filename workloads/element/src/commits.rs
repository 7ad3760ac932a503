//! Group commit of new files. An upload hands its row to the committers and waits for the
//! answer; a committer takes every row queued while the previous statement ran and commits them
//! in one statement: one transaction, one firing of the running-totals trigger and one commit
//! for all of them. Nothing waits for a group to fill: a lone upload is committed at once, and
//! only the rows that queued meanwhile go together.

use std::sync::Arc;

use artstore_events::FileRecord;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::database_unavailable;
use crate::metrics::Metrics;
use crate::store::{self, Inserted, NewFile};

/// Statements in flight at once: while one runs, the other collects (and, at a low rate, each
/// upload still commits alone and at once).
const COMMITTERS: usize = 2;
/// The most rows in one statement.
const MAX_GROUP: usize = 64;
/// Rows waiting for a committer before an upload waits to queue.
const QUEUE: usize = 1024;

/// What a committer answers: `None` when the caller had gone before its group's statement
/// (nothing was written).
type Answer = Result<Option<Inserted>, sqlx::Error>;

struct Queued {
    record: FileRecord,
    upload_id: Option<Uuid>,
    caller_gone: Option<CancellationToken>,
    answer: oneshot::Sender<Answer>,
}

impl Queued {
    fn caller_gone(&self) -> bool {
        self.caller_gone.as_ref().is_some_and(|t| t.is_cancelled())
    }
}

/// Hands rows to the committers, which run as long as a handle does.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Queued>,
}

impl Committer {
    /// Starts the committers (on the current runtime).
    pub fn start(pool: PgPool, metrics: Metrics) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..COMMITTERS {
            tokio::spawn(run(pool.clone(), metrics.clone(), receiver.clone()));
        }
        Committer { queue }
    }

    /// Commits `record` and its `file.created` outbox row, first claiming `upload_id` when
    /// given (see [`store::insert_and_announce`]). `Ok(None)`: `caller_gone` was cancelled
    /// before the statement, and nothing was written.
    pub async fn commit(
        &self,
        record: FileRecord,
        upload_id: Option<Uuid>,
        caller_gone: Option<CancellationToken>,
    ) -> Answer {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            record,
            upload_id,
            caller_gone,
            answer,
        };
        self.queue
            .send(queued)
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn run(pool: PgPool, metrics: Metrics, receiver: Arc<Mutex<mpsc::Receiver<Queued>>>) {
    while let Some(group) = next_group(&receiver).await {
        metrics.commit_group_files.observe(group.len() as f64);
        commit_group(&pool, group).await;
    }
}

/// Waits for a row, then takes every row queued behind it (up to [`MAX_GROUP`]). `None` once
/// every handle is gone.
async fn next_group(receiver: &Mutex<mpsc::Receiver<Queued>>) -> Option<Vec<Queued>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(queued) => group.push(queued),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn commit_group(pool: &PgPool, group: Vec<Queued>) {
    // The last moment to honour a caller that gave up: after the statement its copy is visible.
    let (gone, group): (Vec<Queued>, Vec<Queued>) =
        group.into_iter().partition(Queued::caller_gone);
    for queued in gone {
        let _ = queued.answer.send(Ok(None));
    }
    if group.is_empty() {
        return;
    }
    match insert(pool, &group).await {
        Ok(results) => {
            for (queued, inserted) in group.into_iter().zip(results) {
                let _ = queued.answer.send(Ok(Some(inserted)));
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(queued) = group.into_iter().next() {
                let _ = queued.answer.send(Err(e));
            }
        }
        // The database cannot be used now (down, out of connections, the statement timed out):
        // every row fails with that, at once (trying each alone would wait that long per row).
        Err(e) if database_unavailable(&e) => {
            let reason = e.to_string();
            for queued in group {
                let shared = std::io::Error::other(reason.clone());
                let _ = queued.answer.send(Err(sqlx::Error::Io(shared)));
            }
        }
        // Otherwise a row may be at fault: each is tried alone, so it fails only its upload.
        Err(e) => {
            tracing::warn!(error = %e, rows = group.len(), "group commit failed; committing its rows one by one");
            for queued in group {
                // `insert` answers exactly one result for one row.
                let alone = insert(pool, std::slice::from_ref(&queued)).await;
                let _ = queued
                    .answer
                    .send(alone.map(|results| results.into_iter().next()));
            }
        }
    }
}

/// One statement for `group`; an answer for every row, in order.
async fn insert(pool: &PgPool, group: &[Queued]) -> Result<Vec<Inserted>, sqlx::Error> {
    let files: Vec<NewFile<'_>> = group
        .iter()
        .map(|queued| NewFile {
            record: &queued.record,
            upload_id: queued.upload_id,
        })
        .collect();
    let results = store::insert_and_announce(pool, &files).await?;
    if results.len() != group.len() {
        return Err(sqlx::Error::Protocol(format!(
            "group commit answered {} rows for {}",
            results.len(),
            group.len()
        )));
    }
    Ok(results)
}
