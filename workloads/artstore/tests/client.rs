//! The `artstore` client commands against the real local stack (two storage elements, a query
//! node and an ingester as processes over real PostgreSQL, Redis and SeaweedFS). Output is not
//! a terminal here, so no progress bars are drawn: the tests read the plain lines.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use artstore_testsupport as ts;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Fault, Proxy, Stack, write_content};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.stderr))
            })
            .collect()
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `artstore` with its own config file and none of the caller's ARTSTORE_* settings.
struct Client {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Client {
    fn new() -> Client {
        let dir = tempfile::tempdir().expect("tempdir");
        Client {
            config: dir.path().join("config").join("config.json"),
            _dir: dir,
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_artstore"))
            .args(args)
            .env("ARTSTORE_CONFIG", &self.config)
            .env_remove("ARTSTORE_INGESTER_URL")
            .env_remove("ARTSTORE_QUERY_URL")
            .env_remove("ARTSTORE_TOKEN")
            .output()
            .await
            .expect("artstore runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Files named `name` on every storage element, read from the elements themselves.
async fn stored_copies(stack: &Stack, name: &str) -> usize {
    let mut n = 0;
    for url in stack.element_urls() {
        let element = artstore_client::ElementClient::new(
            &url,
            &stack.token("admin"),
            artstore_client::Timeouts::default(),
            artstore_client::RetryPolicy::none(),
        )
        .expect("element client");
        n += element
            .list_all()
            .await
            .expect("list")
            .iter()
            .filter(|r| r.original_filename == name)
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uploads_a_folder_finds_a_file_and_downloads_it() {
    let stack = Stack::start(&[]);
    let cli = Client::new();
    let work = tempfile::tempdir().expect("tempdir");

    // Nothing configured yet: a usage error that names the fix.
    let none = cli.run(&["search", "x"]).await;
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("artstore login"), "{}", none.stderr);

    cli.run(&[
        "login",
        "--from-stack",
        s(&stack.stack_json()),
        "--profile",
        "local",
    ])
    .await
    .ok();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cli.config)
            .expect("config")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A folder of twelve files in two levels, several uploads at once.
    let folder = work.path().join("survey");
    std::fs::create_dir_all(folder.join("raw")).expect("mkdir");
    let mut sizes = std::collections::BTreeMap::new();
    for i in 0..12 {
        let sub = if i % 2 == 0 {
            folder.clone()
        } else {
            folder.join("raw")
        };
        let name = format!("plover-{i:02}.csv");
        let data = write_content(&sub.join(&name), 1000 + i * 517, i as u32);
        sizes.insert(name, data.len() as u64);
    }
    let refused = cli.run(&["upload", s(&folder)]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--recursive"), "{}", refused.stderr);
    let up = cli
        .run(&[
            "upload",
            s(&folder),
            "--recursive",
            "--jobs",
            "4",
            "--tag",
            "plover",
            "--description",
            "shorebird counts",
            "--json",
        ])
        .await
        .ok();
    let records = up.lines();
    assert_eq!(records.len(), 12, "{}", up.stdout);
    for r in &records {
        let name = r["original_filename"].as_str().expect("name");
        assert_eq!(r["size"].as_u64(), sizes.get(name).copied(), "{r}");
        assert_eq!(r["tags"], serde_json::json!(["plover"]));
    }
    assert!(up.stderr.contains("12 of 12 files stored"), "{}", up.stderr);

    // A 50 MB file, streamed.
    let big_path = work.path().join("dunlin-tracks.bin");
    let big = write_content(&big_path, 50 * 1024 * 1024, 7);
    let up = cli.run(&["upload", s(&big_path)]).await.ok();
    let line = up.stdout.lines().next().expect("a line per file");
    assert!(line.starts_with("stored"), "{}", up.stdout);
    let big_id = line.split_whitespace().nth(1).expect("id").to_string();
    assert!(up.stdout.contains("1 of 1 files stored"), "{}", up.stdout);

    // Searchable once the query node caught up; --all pages through with the cursor.
    let found = ts::eventually(
        Duration::from_secs(30),
        "the folder becomes searchable",
        || async {
            let out = cli
                .run(&["search", "shorebird", "--all", "--limit", "5", "--json"])
                .await;
            (out.code == 0 && out.lines().len() == 12).then_some(out)
        },
    )
    .await;
    let mut names: Vec<String> = found
        .lines()
        .iter()
        .filter_map(|r| r["original_filename"].as_str().map(String::from))
        .collect();
    names.sort();
    assert_eq!(names, sizes.keys().cloned().collect::<Vec<_>>());
    let page = cli.run(&["search", "shorebird", "--limit", "5"]).await.ok();
    let header = page.stdout.lines().next().expect("header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "SIZE", "CREATED", "ELEMENT"]
    );
    assert!(
        page.stdout
            .contains("5 of 12 matches; --all for every page"),
        "{}",
        page.stdout
    );
    let table = ts::eventually(
        Duration::from_secs(30),
        "the big file becomes searchable",
        || async {
            let out = cli.run(&["search", "dunlin"]).await;
            out.stdout.contains(&big_id).then_some(out)
        },
    )
    .await;
    assert!(table.stdout.contains("50.00 MiB"), "{}", table.stdout);
    assert!(
        table.stdout.contains("dunlin-tracks.bin"),
        "{}",
        table.stdout
    );

    let info = cli.run(&["info", &big_id]).await.ok();
    assert!(info.stdout.contains(&sha256(&big)), "{}", info.stdout);
    let info = cli.run(&["info", &big_id, "--json"]).await.ok();
    assert_eq!(info.lines()[0]["size"], 50 * 1024 * 1024);

    // A download whose connection breaks after 5 MB resumes with Range and verifies.
    let cut = Proxy::start(&stack.get("query_url"), Fault::CutFirstAnswerAfter(5 << 20)).await;
    let into = work.path().join("downloads");
    std::fs::create_dir_all(&into).expect("mkdir");
    let got = cli
        .run(&["download", &big_id, "-o", s(&into), "--query-url", &cut.url])
        .await
        .ok();
    assert!(got.stderr.contains("resuming"), "{}", got.stderr);
    assert!(got.stdout.contains("SHA-256 verified"), "{}", got.stdout);
    let copy = std::fs::read(into.join("dunlin-tracks.bin")).expect("downloaded");
    assert!(copy == big, "downloaded bytes differ");
    let answered = cut.answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        answered < big.len() as u64 + (6 << 20),
        "the whole file was fetched again ({answered} bytes passed)"
    );
    assert!(
        cut.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the rest came over a new connection"
    );

    // The file exists now: no silent overwrite.
    let again = cli.run(&["download", &big_id, "-o", s(&into)]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);

    // A partial file with wrong bytes: the result cannot verify and nothing is left behind.
    let dest = work.path().join("corrupt.bin");
    let part = artstore_client::partial_path(&dest, &big_id);
    std::fs::write(&part, vec![0u8; 1 << 20]).expect("part");
    let bad = cli
        .run(&["download", &big_id, "-o", s(&dest), "--json"])
        .await;
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert_eq!(bad.lines()[0]["error"]["code"], "checksum_mismatch");
    assert!(
        bad.stderr.contains("run the download again"),
        "{}",
        bad.stderr
    );
    assert!(
        !dest.exists() && !part.exists(),
        "a corrupt file was left behind"
    );
    cli.run(&["download", &big_id, "-o", s(&dest)]).await.ok();
    assert!(std::fs::read(&dest).expect("dest") == big);

    // Edit: tags are a set; description replaced.
    let first_id = records[0]["file_id"].as_str().expect("id").to_string();
    let edited = cli
        .run(&[
            "edit",
            &first_id,
            "--add-tag",
            "checked",
            "--remove-tag",
            "plover",
            "--description",
            "recounted",
            "--json",
        ])
        .await
        .ok();
    let r = &edited.lines()[0];
    assert_eq!(r["tags"], serde_json::json!(["checked"]));
    assert_eq!(r["description"], "recounted");

    // rm: each id reported; a second rm of the same id fails with the server's code.
    let second_id = records[1]["file_id"].as_str().expect("id").to_string();
    let rm = cli.run(&["rm", &first_id, &second_id, "--json"]).await.ok();
    assert_eq!(rm.lines().len(), 2);
    assert!(rm.lines().iter().all(|l| l["deleted"] == true));
    let twice = cli.run(&["rm", &first_id]).await;
    assert_eq!(twice.code, 1);
    assert!(twice.stderr.contains("file_not_found"), "{}", twice.stderr);

    // A bad token: exit 1, the server's code, and the fix.
    let bad = cli
        .run(&["search", "plover", "--token", "not-a-token"])
        .await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("[unauthorized]"), "{}", bad.stderr);
    assert!(bad.stderr.contains("artstore login"), "{}", bad.stderr);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &artstore_contract::token::Claims {
            sub: "someone".into(),
            role: "reader".into(),
            iat: 1,
            exp: 2,
        },
        &jsonwebtoken::EncodingKey::from_secret(stack.secret().trim_ascii_end()),
    )
    .expect("token");
    let old = cli.run(&["info", &big_id, "--token", &expired]).await;
    assert_eq!(old.code, 1);
    assert!(
        old.stderr
            .contains("token expired: run `artstore login` again"),
        "{}",
        old.stderr
    );

    // Nothing listens there: exit 1, and the message names the URL.
    let port = ts::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let gone = cli
        .run(&["search", "x", "--query-url", &url, "--retries", "1"])
        .await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr
            .contains(&format!("cannot reach the query node at {url}")),
        "{}",
        gone.stderr
    );
    let gone = cli
        .run(&[
            "upload",
            s(&big_path),
            "--ingester-url",
            &url,
            "--retries",
            "0",
            "--json",
        ])
        .await;
    assert_eq!(gone.code, 1);
    assert_eq!(gone.lines()[0]["error"]["code"], "unreachable");
    assert_eq!(gone.lines()[0]["path"], s(&big_path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upload_whose_answer_was_lost_is_stored_once() {
    let stack = Stack::start(&[]);
    let cli = Client::new();
    cli.run(&["login", "--from-stack", s(&stack.stack_json())])
        .await
        .ok();
    let work = tempfile::tempdir().expect("tempdir");
    let name = format!("{}.txt", ts::unique_name("sanderling"));
    let path = work.path().join(&name);
    write_content(&path, 200_000, 3);

    let lossy = Proxy::start(&stack.get("ingester_url"), Fault::LoseFirstAnswer).await;
    let up = cli
        .run(&["upload", s(&path), "--ingester-url", &lossy.url])
        .await
        .ok();
    assert!(up.stderr.contains("retrying"), "{}", up.stderr);
    assert!(
        up.stdout.starts_with("replayed"),
        "the retry must get the stored record back: {}",
        up.stdout
    );
    assert_eq!(stored_copies(&stack, &name).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_rate_limit_wait_for_retry_after() {
    let stack = Stack::start(&["--rate-limit-per-minute", "3"]);
    let cli = Client::new();
    cli.run(&["login", "--from-stack", s(&stack.stack_json())])
        .await
        .ok();
    let work = tempfile::tempdir().expect("tempdir");
    for i in 0..5 {
        write_content(&work.path().join(format!("tern-{i}.bin")), 10_000, i);
    }

    // Five files, three allowed a minute: two wait for the window the server names. One job at
    // a time, so the order of the answers does not depend on how the uploads race.
    let up = cli
        .run(&[
            "upload",
            s(work.path()),
            "--recursive",
            "--jobs",
            "1",
            "--json",
        ])
        .await
        .ok();
    assert_eq!(up.lines().len(), 5, "{}", up.stdout);
    assert!(up.stderr.contains("[rate_limited]"), "{}", up.stderr);
    assert!(up.stderr.contains("retrying"), "{}", up.stderr);

    // Without retries the limit is an error that says what to do.
    let over = cli
        .run(&[
            "upload",
            s(work.path()),
            "--recursive",
            "--jobs",
            "5",
            "--retries",
            "0",
            "--json",
        ])
        .await;
    assert_eq!(over.code, 1, "{}", over.stderr);
    let limited: Vec<Value> = over
        .lines()
        .into_iter()
        .filter(|l| l["error"]["code"] == "rate_limited")
        .collect();
    assert!(!limited.is_empty(), "{}", over.stdout);
    assert!(over.stderr.contains("raise --retries"), "{}", over.stderr);
}
