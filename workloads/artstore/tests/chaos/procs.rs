//! A process the chaos test owns: started in a process group of its own so that a kill or a
//! freeze reaches it and every child it forked (PostgreSQL's backends), as a container's crash or
//! a hung host would, and never anything else on the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How to start one process again and again (same ports, same data directory).
pub struct Recipe {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub log: PathBuf,
}

pub struct Proc {
    pub name: String,
    recipe: Recipe,
    child: Option<Child>,
    frozen: bool,
}

impl Proc {
    pub fn start(name: &str, recipe: Recipe) -> Result<Proc> {
        let mut p = Proc {
            name: name.to_string(),
            recipe,
            child: None,
            frozen: false,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.recipe.log)?;
        let child = Command::new(&self.recipe.program)
            .args(&self.recipe.args)
            .envs(self.recipe.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.frozen = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process has not exited (frozen counts as running).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Signals the process's group and every process descended from it: PostgreSQL's backends
    /// leave the postmaster's group (`setsid`), yet die with it when a container crashes.
    fn signal_group(&self, signal: &str) -> Result<()> {
        let pid = self.pid().context("not started")?;
        let mut targets = vec![format!("-{pid}")];
        targets.extend(descendants(pid).into_iter().map(|p| p.to_string()));
        let status = Command::new("kill")
            .args(["-s", signal, "--"])
            .args(&targets)
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("kill -s {signal} {targets:?} ({}) failed", self.name);
        }
        Ok(())
    }

    /// `kill -9` of the whole group; reaps it.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        let mut orphans = pid.map(descendants).unwrap_or_default();
        let _ = self.signal_group("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        // Children of the group (PostgreSQL backends) die with it; wait until the kernel has
        // removed them, so their sockets and shared memory are released before a restart.
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && (group_alive(pid) || !orphans.is_empty()) {
                orphans.retain(|p| Path::new(&format!("/proc/{p}")).exists());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.frozen = false;
    }

    /// SIGTERM (a graceful stop), waiting up to `grace` before SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.frozen {
            self.thaw();
        }
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    pub fn freeze(&mut self) {
        if self.signal_group("STOP").is_ok() {
            self.frozen = true;
        }
    }

    pub fn thaw(&mut self) {
        let _ = self.signal_group("CONT");
        self.frozen = false;
    }

    /// Starts it again with the same recipe (after a kill or when it exited on its own).
    pub fn restart(&mut self) -> Result<()> {
        if self.running() {
            self.kill9();
        }
        self.child = None;
        self.spawn()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_group("CONT");
            let _ = self.signal_group("KILL");
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
    }
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-s", "0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every process whose chain of parents leads to `root` (from `/proc/*/stat`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}
