//! Progress bars on stderr, drawn only when stderr is a terminal; elsewhere (pipes, CI,
//! tests) nothing is drawn and the plain lines of the command are the whole output.

use std::io::IsTerminal;
use std::sync::Arc;

use artstore_client::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Bars {
    multi: Option<MultiProgress>,
}

const FILE_STYLE: &str =
    "{prefix:>30.dim} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}";
const TOTAL_STYLE: &str = "{prefix:>30.bold} {bar:30.green/white} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}";

impl Bars {
    pub fn for_stderr() -> Bars {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars { multi }
    }

    pub fn drawn(&self) -> bool {
        self.multi.is_some()
    }

    fn bar(&self, total: u64, prefix: String, template: &str) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(total));
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(prefix);
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    /// A bar for one file; `total` moves along with it.
    pub fn file(&self, name: &str, size: u64, total: &ProgressBar) -> Arc<FileBar> {
        Arc::new(FileBar {
            bar: self.bar(size, shorten(name, 30), FILE_STYLE),
            total: total.clone(),
            done: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn total(&self, bytes: u64, label: &str) -> ProgressBar {
        self.bar(bytes, label.to_string(), TOTAL_STYLE)
    }

    /// A line above the bars (or plainly on stderr when none are drawn).
    pub fn note(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn remove(&self, bar: &ProgressBar) {
        if let Some(m) = &self.multi {
            bar.finish_and_clear();
            m.remove(bar);
        }
    }
}

/// One file's bar; a restarted attempt winds the total back by what this file had counted.
pub struct FileBar {
    pub bar: ProgressBar,
    total: ProgressBar,
    done: std::sync::atomic::AtomicU64,
}

impl Progress for FileBar {
    fn set(&self, done: u64) {
        let before = self.done.swap(done, std::sync::atomic::Ordering::SeqCst);
        self.bar.set_position(done);
        let total = self.total.position();
        self.total
            .set_position(total.saturating_sub(before).saturating_add(done));
    }

    fn advance(&self, bytes: u64) {
        self.done
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst);
        self.bar.inc(bytes);
        self.total.inc(bytes);
    }
}

fn shorten(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        name.to_string()
    } else {
        let tail: String = name.chars().skip(count + 1 - width).collect();
        format!("…{tail}")
    }
}

/// A transfer with a single bar (download).
pub struct Single(pub ProgressBar);

impl Progress for Single {
    fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}
