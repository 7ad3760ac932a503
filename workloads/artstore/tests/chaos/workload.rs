//! The workload: several clients, each uploading (with and without Idempotency-Key), changing,
//! deleting, searching and downloading its own files through the proxies, and writing every
//! answer into its ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::ledger::{Answer, ClientLedger, Meta, State, Upload};

/// The longest a client waits for one answer: above the ingester's fall-through over both
/// elements (10 s idle timeout each) and an Idempotency-Key lease (15 s).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Client {
    pub index: usize,
    pub ingester_url: String,
    pub query_url: String,
    pub token: String,
    pub http: reqwest::Client,
    pub rng: StdRng,
    pub ledger: ClientLedger,
    /// Uploads with a key that got no answer yet, retried with the same key.
    pending_keyed: Vec<usize>,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("http client")
}

/// Reads an answer: status and JSON body (or `Unanswered` when the exchange broke).
async fn answer(
    result: reqwest::Result<reqwest::Response>,
) -> (Answer, Option<serde_json::Value>, bool) {
    let Ok(response) = result else {
        return (Answer::Unanswered, None, false);
    };
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let Ok(bytes) = response.bytes().await else {
        return (Answer::Unanswered, None, false);
    };
    let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    if (200..300).contains(&status) {
        (Answer::Ok(status), body, replayed)
    } else {
        let code = body
            .as_ref()
            .and_then(|b| b["code"].as_str())
            .unwrap_or("(no code)")
            .to_string();
        (Answer::Error(status, code), body, replayed)
    }
}

/// The bytes of upload `n` of client `c` under `seed`: anyone can make them again.
pub fn content(seed: u64, client: usize, n: usize, size: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((client as u64) << 40) ^ (n as u64) << 8);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    data
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Client {
    pub fn new(
        index: usize,
        seed: u64,
        ingester_url: String,
        query_url: String,
        token: String,
    ) -> Client {
        Client {
            index,
            ingester_url,
            query_url,
            token,
            http: http_client(),
            rng: StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(index as u64 + 1)),
            ledger: ClientLedger::default(),
            pending_keyed: Vec::new(),
        }
    }

    /// Runs until `stop`, then returns.
    pub async fn run(mut self, seed: u64, stop: Arc<AtomicBool>) -> Client {
        while !stop.load(Ordering::SeqCst) {
            let roll = self.rng.random_range(0..100);
            match roll {
                0..45 => self.upload_new(seed).await,
                45..60 => self.patch_one().await,
                60..70 => self.delete_one().await,
                70..85 => self.search_one().await,
                _ => self.download_one().await,
            }
            if !self.pending_keyed.is_empty() && self.rng.random_bool(0.3) {
                let i = self.pending_keyed.remove(0);
                self.retry_keyed(seed, i).await;
            }
            let pause = self.rng.random_range(30..150);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self
    }

    fn size(&mut self) -> usize {
        match self.rng.random_range(0..100) {
            0..85 => self.rng.random_range(1..64 * 1024),
            85..96 => self.rng.random_range(64 * 1024..2 << 20),
            // Over 8 MiB: spooled to disk by the ingester, a multipart upload on S3.
            _ => self.rng.random_range(9 << 20..11 << 20),
        }
    }

    async fn upload_new(&mut self, seed: u64) {
        let n = self.ledger.uploads.len();
        let size = self.size();
        let data = content(seed, self.index, n, size);
        let word = format!("kw{}x{}", self.index, n);
        let keyed = self.rng.random_bool(0.5);
        let upload = Upload {
            name: format!("chaos-c{}-n{}.bin", self.index, n),
            word,
            sha256: sha256_hex(&data),
            size: size as u64,
            key: keyed.then(|| format!("chaos-{}-{}-{}", seed, self.index, n)),
            answers: Vec::new(),
            file_id: None,
            element: None,
            expect: Vec::new(),
        };
        self.ledger.uploads.push(upload);
        self.send_upload(n, data).await;
        if keyed && !self.ledger.uploads[n].acknowledged() {
            self.pending_keyed.push(n);
        }
    }

    /// Retries a keyed upload that has no acknowledged answer yet, with the same key and body.
    pub async fn retry_keyed(&mut self, seed: u64, n: usize) {
        let size = self.ledger.uploads[n].size as usize;
        let data = content(seed, self.index, n, size);
        self.send_upload(n, data).await;
        if !self.ledger.uploads[n].acknowledged() {
            self.pending_keyed.push(n);
        }
    }

    /// Keyed uploads still without an acknowledged answer (the convergence phase retries them).
    pub fn take_pending_keyed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.pending_keyed)
    }

    async fn send_upload(&mut self, n: usize, data: Vec<u8>) {
        let u = &self.ledger.uploads[n];
        let form = reqwest::multipart::Form::new()
            .text("description", format!("chaos upload {}", u.word))
            .text("tags", "chaos")
            .text("tags", format!("c{}", self.index))
            .part(
                "file",
                reqwest::multipart::Part::bytes(data).file_name(u.name.clone()),
            );
        let mut request = self
            .http
            .post(format!("{}/api/v1/files/upload", self.ingester_url))
            .bearer_auth(&self.token)
            .multipart(form);
        if let Some(key) = &u.key {
            request = request.header("Idempotency-Key", key);
        }
        let (ans, body, replayed) = answer(request.send().await).await;
        self.ledger.record("upload", &ans);
        let u = &mut self.ledger.uploads[n];
        u.answers.push(ans.clone());
        if !ans.is_ok() {
            return;
        }
        let Some(record) = body else {
            self.ledger
                .anomalies
                .push(format!("{}: 2xx upload answer without a record", u.name));
            return;
        };
        let file_id = record["file_id"].as_str().unwrap_or_default().to_string();
        if record["sha256"].as_str() != Some(u.sha256.as_str())
            || record["size"].as_u64() != Some(u.size)
            || record["original_filename"].as_str() != Some(u.name.as_str())
        {
            self.ledger.anomalies.push(format!(
                "{}: acknowledged with another file's record (replayed: {replayed}): {record}",
                u.name
            ));
            return;
        }
        if let Some(known) = &u.file_id {
            if *known != file_id {
                self.ledger.anomalies.push(format!(
                    "{}: a retry with the same key answered another file id ({known} then {file_id})",
                    u.name
                ));
            }
            return;
        }
        u.file_id = Some(file_id);
        u.element = record["storage_element_id"].as_str().map(String::from);
        match Meta::from_record(&record) {
            Some(meta) => u.expect = vec![State::Live(meta)],
            None => self
                .ledger
                .anomalies
                .push(format!("{}: record without version: {record}", u.name)),
        }
    }

    /// An acknowledged file of this client that is live and certain, at random.
    fn pick_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = self
            .ledger
            .uploads
            .iter()
            .enumerate()
            .filter(|(_, u)| matches!(u.certain(), Some(State::Live(_))))
            .map(|(i, _)| i)
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.random_range(0..live.len())])
    }

    async fn patch_one(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let r: u32 = self.rng.random();
        let u = &self.ledger.uploads[i];
        let Some(State::Live(old)) = u.certain().cloned() else {
            return;
        };
        let new = Meta {
            version: old.version + 1,
            description: Some(format!("chaos patched {} r{r}", u.word)),
            tags: vec!["chaos".into(), format!("p{r}")],
        };
        let request = self
            .http
            .patch(format!(
                "{}/api/v1/files/{}",
                self.ingester_url,
                u.file_id.as_deref().unwrap_or_default()
            ))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"description": new.description, "tags": new.tags}));
        let (ans, body, _) = answer(request.send().await).await;
        self.ledger.record("patch", &ans);
        let u = &mut self.ledger.uploads[i];
        if ans.is_ok() {
            let told = body.as_ref().and_then(Meta::from_record);
            if told.as_ref() != Some(&new) {
                self.ledger.anomalies.push(format!(
                    "{}: PATCH answered {told:?}, expected {new:?}",
                    u.name
                ));
            }
            u.expect = vec![State::Live(told.unwrap_or(new))];
        } else {
            u.expect = vec![State::Live(old), State::Live(new)];
        }
    }

    async fn delete_one(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let u = &self.ledger.uploads[i];
        let request = self
            .http
            .delete(format!(
                "{}/api/v1/files/{}",
                self.ingester_url,
                u.file_id.as_deref().unwrap_or_default()
            ))
            .bearer_auth(&self.token);
        let (ans, _, _) = answer(request.send().await).await;
        self.ledger.record("delete", &ans);
        let u = &mut self.ledger.uploads[i];
        if ans.is_ok() {
            u.expect = vec![State::Gone];
        } else {
            let old = u.expect[0].clone();
            u.expect = vec![old, State::Gone];
        }
    }

    async fn search_one(&mut self) {
        let word = match self.pick_live() {
            Some(i) => self.ledger.uploads[i].word.clone(),
            None => "chaos".to_string(),
        };
        let request = self
            .http
            .post(format!("{}/api/v1/search", self.query_url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"query": word, "limit": 20}));
        let (ans, _, _) = answer(request.send().await).await;
        self.ledger.record("search", &ans);
    }

    async fn download_one(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let u = &self.ledger.uploads[i];
        let url = format!(
            "{}/api/v1/files/{}/download",
            self.query_url,
            u.file_id.as_deref().unwrap_or_default()
        );
        let (name, sha) = (u.name.clone(), u.sha256.clone());
        let result = self.http.get(url).bearer_auth(&self.token).send().await;
        let ans = match result {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(bytes) => {
                    if sha256_hex(&bytes) != sha {
                        self.ledger.anomalies.push(format!(
                            "{name}: download gave {} bytes with another SHA-256",
                            bytes.len()
                        ));
                    }
                    Answer::Ok(200)
                }
                Err(_) => Answer::Unanswered,
            },
            other => answer(other).await.0,
        };
        self.ledger.record("download", &ans);
    }
}
