//! Jobs the operator runs for an element: a requested rebuild and a scheduled maintenance run.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{NAMESPACE, cluster, eventually};

const ELEMENT: &str = "se-volume";

async fn job_names(c: &crate::support::Cluster, prefix: &str) -> BTreeSet<String> {
    c.namespaced::<Job>(NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_rebuild_request_runs_one_job_and_is_recorded_once() {
    let c = cluster().await;
    let prefix = format!("{ELEMENT}-rebuild-");
    let before = job_names(&c, &prefix).await;
    let request = format!("full@{}", c.run);
    c.api("StorageElement")
        .patch(
            ELEMENT,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"artstore.io/rebuild": request}}})),
        )
        .await
        .unwrap();
    let record = eventually(
        "the rebuild recorded as succeeded",
        Duration::from_secs(180),
        || async {
            let se = c.get("StorageElement", ELEMENT).await;
            let last = se["status"]["lastRebuild"].clone();
            (last["request"] == json!(request) && last["phase"] == "Succeeded").then_some(last)
        },
    )
    .await;
    assert_eq!(record["mode"], "full");
    assert!(record["completedAt"].is_string(), "{record}");

    let started: Vec<String> = job_names(&c, &prefix)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(
        started,
        vec![record["jobName"].as_str().unwrap().to_string()]
    );
    let job = c
        .namespaced::<Job>(NAMESPACE)
        .get(&started[0])
        .await
        .unwrap();
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    // The same request seen again (a resync, a restart) starts nothing new.
    c.merge_patch(
        "StorageElement",
        ELEMENT,
        json!({"metadata": {"labels": {"e2e-touch": c.run}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after: Vec<String> = job_names(&c, &prefix)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(after, started, "one request, one Job");

    // The rebuilt cache agrees with the element's sidecars.
    let report: serde_json::Value = c
        .http
        .get(format!(
            "{}/api/v1/cache/consistency",
            c.element(ELEMENT).url
        ))
        .bearer_auth(&c.stack.tokens.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["is_consistent"], json!(true), "{report}");
}

#[tokio::test]
async fn a_maintenance_schedule_produces_a_job_that_succeeds() {
    let c = cluster().await;
    let original =
        c.get("StorageElement", ELEMENT).await["spec"]["maintenance"]["consistencyCheck"].clone();
    c.merge_patch(
        "StorageElement",
        ELEMENT,
        json!({"spec": {"maintenance": {"consistencyCheck": "* * * * *"}}}),
    )
    .await;
    let cronjobs = c.namespaced::<CronJob>(NAMESPACE);
    let cronjob = eventually(
        "the consistency CronJob runs every minute",
        Duration::from_secs(60),
        || async {
            cronjobs
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|cj| {
                    let name = cj.metadata.name.clone().unwrap_or_default();
                    name.starts_with(ELEMENT)
                        && name.contains("consistency")
                        && cj.spec.as_ref().is_some_and(|s| s.schedule == "* * * * *")
                })
        },
    )
    .await;
    let uid = cronjob.metadata.uid.clone().unwrap();
    let jobs = c.namespaced::<Job>(NAMESPACE);
    eventually(
        "a scheduled consistency Job succeeds",
        Duration::from_secs(180),
        || async {
            jobs.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|j| {
                    j.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.uid == uid)
                        && j.status.as_ref().and_then(|s| s.succeeded) == Some(1)
                })
        },
    )
    .await;
    let se = c.get("StorageElement", ELEMENT).await;
    c.merge_patch(
        "StorageElement",
        ELEMENT,
        json!({"spec": {"maintenance": {"consistencyCheck": original}}}),
    )
    .await;
    // The operator reports the element's consistency on the resource.
    let report = eventually(
        "the consistency report in status",
        Duration::from_secs(120),
        || async {
            let se = c.get("StorageElement", ELEMENT).await;
            let report = se["status"]["lastConsistencyReport"].clone();
            report.is_object().then_some(report)
        },
    )
    .await;
    assert!(
        report["checkedAt"].is_string(),
        "{report} in {}",
        se["status"]
    );
}
