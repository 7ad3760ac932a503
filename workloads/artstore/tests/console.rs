//! The web console in a real browser: Debian's chromium, headless, driven over WebDriver by
//! chromedriver, against the real local stack. A writer uploads two files through the page,
//! finds one by search, opens its details, downloads it (bytes compared), edits its tags and
//! sees the change in search, deletes it; a reader sees no write controls; an admin sees the
//! storage elements; a wrong token shows the server's error. Screenshots of the search page and the upload dialog are written to
//! `target/console/` on every run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{Stack, target_dir};

const WAIT: Duration = Duration::from_secs(30);

fn find_program(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = Path::new(dir).join(name);
            if path.exists() {
                return path;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: run scripts/install.sh (Debian's chromium and chromium-driver)"
    )
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn start_browser(profile: &Path, downloads: &Path) -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(find_program(&["chromedriver"]))
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "safebrowsing.enabled": false,
            },
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
}

/// Polls `check` until it gives `Some`, at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

async fn displayed(c: &Client, selector: &str) -> bool {
    match c.find(Locator::Css(selector)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn set_value(c: &Client, selector: &str, value: &str) {
    let input = css(c, selector).await;
    input.clear().await.expect("clear");
    if !value.is_empty() {
        input.send_keys(value).await.expect("type");
    }
}

async fn sign_in(c: &Client, console: &str, token: &str) {
    // Start signed out: the session is cleared from a same-origin page that runs no script (the
    // console page itself may still be finishing a sign-in that would store its token again).
    c.goto(&format!("{console}config.json"))
        .await
        .expect("open a page of the console's origin");
    c.execute("sessionStorage.clear();", vec![])
        .await
        .expect("clear session");
    c.goto(console).await.expect("open console");
    set_value(c, "#token", token).await;
    css(c, "#sign-in").await.click().await.expect("sign in");
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = target_dir().join("console");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let path = dir.join(name);
    std::fs::write(&path, c.screenshot().await.expect("screenshot")).expect("write screenshot");
    path
}

/// Searches for `query` (and `tag`, when given) and returns the file names in the result table.
async fn search(c: &Client, query: &str, tag: &str) -> Vec<String> {
    if !displayed(c, "#f-tags-all").await {
        css(c, "#search-form summary")
            .await
            .click()
            .await
            .expect("open filters");
    }
    set_value(c, "#q", query).await;
    set_value(c, "#f-tags-all", tag).await;
    css(c, "#search-button")
        .await
        .click()
        .await
        .expect("search");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut names = Vec::new();
    for link in c
        .find_all(Locator::Css("#results tbody .file-link"))
        .await
        .expect("result links")
    {
        names.push(link.text().await.unwrap_or_default());
    }
    names
}

async fn open_details(c: &Client, name: &str) {
    for link in c
        .find_all(Locator::Css("#results tbody .file-link"))
        .await
        .expect("result links")
    {
        if link.text().await.unwrap_or_default() == name {
            link.click().await.expect("open details");
            eventually("the details dialog opens", || async {
                displayed(c, "#details").await.then_some(())
            })
            .await;
            return;
        }
    }
    panic!("{name} is not in the results");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_flow_in_a_real_browser() {
    let stack = Stack::start(&[]);
    let console = stack.get("console_url");
    let work = tempfile::tempdir().expect("tempdir");
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    let (_driver, c) = start_browser(&work.path().join("profile"), &downloads).await;

    let run = format!("{:x}", rand_word());
    let first = format!("alpha{run}.txt");
    let second = format!("beta{run}.txt");
    let first_bytes = format!("first file of run {run}\n")
        .repeat(200)
        .into_bytes();
    let first_path = work.path().join(&first);
    let second_path = work.path().join(&second);
    std::fs::write(&first_path, &first_bytes).expect("first file");
    std::fs::write(&second_path, b"second file\n").expect("second file");

    // A writer signs in and sees the search page with the upload control.
    sign_in(&c, &console, &stack.token("writer")).await;
    eventually("the search page shows", || async {
        displayed(&c, "#search-view").await.then_some(())
    })
    .await;
    assert!(displayed(&c, "#open-upload").await, "a writer sees Upload");
    screenshot(&c, "search-page.png").await;

    // Two files through the upload dialog, each with its own progress and result.
    css(&c, "#open-upload")
        .await
        .click()
        .await
        .expect("open upload");
    set_value(&c, "#upload-tags", &format!("run{run}")).await;
    css(&c, "#upload-files")
        .await
        .send_keys(&format!(
            "{}\n{}",
            first_path.display(),
            second_path.display()
        ))
        .await
        .expect("choose files");
    css(&c, "#upload-start")
        .await
        .click()
        .await
        .expect("upload");
    eventually("both uploads are stored", || async {
        let done = c
            .find_all(Locator::Css("#upload-list li[data-status]"))
            .await
            .ok()?;
        (done.len() == 2).then_some(())
    })
    .await;
    let stored = c
        .find_all(Locator::Css("#upload-list li[data-status=stored]"))
        .await
        .expect("stored items");
    let mut results = String::new();
    for item in c
        .find_all(Locator::Css("#upload-list li"))
        .await
        .expect("items")
    {
        results.push_str(&item.text().await.unwrap_or_default());
        results.push('\n');
    }
    assert_eq!(stored.len(), 2, "both files stored: {results}");
    screenshot(&c, "upload-dialog.png").await;
    css(&c, "#upload-close")
        .await
        .click()
        .await
        .expect("close upload");

    // Found by search once the query node has indexed it.
    eventually("the first file is found by search", || async {
        search(&c, &format!("alpha{run}"), "")
            .await
            .contains(&first)
            .then_some(())
    })
    .await;
    open_details(&c, &first).await;
    let size = css(&c, "#details-fields dd[data-field='Size']").await;
    assert!(
        size.text()
            .await
            .expect("size")
            .contains(&format!("({} bytes)", first_bytes.len())),
        "details show the size"
    );

    // Download through the page; the bytes are the ones uploaded.
    css(&c, "#download").await.click().await.expect("download");
    let downloaded = downloads.join(&first);
    let bytes = eventually("the download finishes", || async {
        std::fs::read(&downloaded)
            .ok()
            .filter(|b| b.len() == first_bytes.len())
    })
    .await;
    assert_eq!(bytes, first_bytes, "downloaded bytes differ");

    // New tags, visible in search.
    let tag = format!("edited{run}");
    set_value(&c, "#edit-tags", &tag).await;
    css(&c, "#save").await.click().await.expect("save");
    // The dialog shows the changed record the ingester relays once the change is made.
    eventually("the details show the new tag", || async {
        let tags = c
            .find(Locator::Css("#details-fields dd[data-field='Tags']"))
            .await
            .ok()?;
        tags.text().await.ok().filter(|t| t.contains(&tag))
    })
    .await;
    css(&c, "#details-close")
        .await
        .click()
        .await
        .expect("close details");
    eventually("search finds the file by its new tag", || async {
        search(&c, "", &tag).await.contains(&first).then_some(())
    })
    .await;

    // Delete: gone from search.
    open_details(&c, &first).await;
    css(&c, "#delete").await.click().await.expect("delete");
    css(&c, "#confirm-delete")
        .await
        .click()
        .await
        .expect("confirm delete");
    // The page closes the dialog once the ingester has answered the DELETE.
    eventually("the details close after the delete", || async {
        (!displayed(&c, "#details").await).then_some(())
    })
    .await;
    eventually("the deleted file leaves search", || async {
        (!search(&c, "", &tag).await.contains(&first)).then_some(())
    })
    .await;

    // A reader: no upload control, no edit controls.
    sign_in(&c, &console, &stack.token("reader")).await;
    eventually("the reader's search page shows", || async {
        displayed(&c, "#search-view").await.then_some(())
    })
    .await;
    assert!(
        !displayed(&c, "#open-upload").await,
        "a reader sees no Upload"
    );
    eventually("the reader finds the second file", || async {
        search(&c, &format!("beta{run}"), "")
            .await
            .contains(&second)
            .then_some(())
    })
    .await;
    open_details(&c, &second).await;
    assert!(
        !displayed(&c, "#edit-form").await,
        "a reader sees no edit controls"
    );
    assert!(
        !displayed(&c, "#delete").await,
        "a reader sees no delete control"
    );
    css(&c, "#details-close")
        .await
        .click()
        .await
        .expect("close details");

    // An admin sees the storage elements from the registry with their last consistency report,
    // runs a check on demand, and sees it as the last report afterwards.
    sign_in(&c, &console, &stack.token("admin")).await;
    // The link appears once the sign-in's first search has answered.
    eventually("the admin's navigation shows", || async {
        displayed(&c, "#nav-admin").await.then_some(())
    })
    .await;
    css(&c, "#nav-admin")
        .await
        .click()
        .await
        .expect("open storage elements");
    let element_rows = || async {
        let mut rows = Vec::new();
        for id in ["se-a", "se-b"] {
            let row = c
                .find(Locator::Css(&format!(
                    "#elements tr[data-element-id='{id}']"
                )))
                .await
                .ok()?;
            rows.push(row.text().await.ok()?);
        }
        Some(rows)
    };
    let rows = eventually("both storage elements are listed", element_rows).await;
    for row in &rows {
        assert!(row.contains("edit"), "mode shown: {row}");
    }
    css(&c, "#admin-check")
        .await
        .click()
        .await
        .expect("run a consistency check");
    let checked = |rows: &Vec<String>| {
        rows.iter()
            .all(|r| r.contains("consistent") && r.contains("checked"))
    };
    eventually("each element shows the check's report", || async {
        element_rows().await.filter(checked)
    })
    .await;
    // Emptied first, so the rows read next are the refresh's (no new check runs then).
    c.execute(
        "document.querySelector('#elements tbody').replaceChildren()",
        vec![],
    )
    .await
    .expect("empty the table");
    css(&c, "#admin-refresh")
        .await
        .click()
        .await
        .expect("refresh");
    let rows = eventually("the report stays as the last one recorded", || async {
        element_rows().await.filter(checked)
    })
    .await;
    assert!(
        rows.iter().all(|r| !r.contains("inconsistent")),
        "a fresh archive is consistent: {rows:?}"
    );

    // A wrong token: the server's message, not a blank page.
    sign_in(&c, &console, "not-a-token").await;
    let error = eventually("the sign-in error shows", || async {
        let box_ = c.find(Locator::Css("#error")).await.ok()?;
        if !box_.is_displayed().await.ok()? {
            return None;
        }
        box_.text().await.ok().filter(|t| !t.is_empty())
    })
    .await;
    assert!(
        error.contains("invalid token") && error.contains("unauthorized"),
        "the API's message is shown: {error}"
    );
    assert!(
        displayed(&c, "#sign-in-view").await,
        "still on the sign-in page"
    );

    c.close().await.expect("close browser");
}

fn rand_word() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
