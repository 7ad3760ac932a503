//! A real Kubernetes control plane for integration tests: etcd and kube-apiserver (and, when
//! asked, kube-controller-manager so Deployments get ReplicaSets, CronJobs get Jobs and the
//! garbage collector runs) on free loopback ports, with a generated kubeconfig, torn down on drop.
//!
//! The binaries are built from their Go modules by `scripts/install-k8s-tools.sh`; their folder
//! comes from `ARTSTORE_K8S_BIN_DIR`. There is no scheduler and no kubelet: Pods stay Pending,
//! so a test plays the kubelet's part when it needs a Job to finish.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// Where the Kubernetes test binaries are; fails loudly when they are not built.
pub fn k8s_bin_dir() -> PathBuf {
    let dir = std::env::var("ARTSTORE_K8S_BIN_DIR").unwrap_or_else(|_| {
        panic!(
            "ARTSTORE_K8S_BIN_DIR is not set: run the tests with scripts/test.sh, or \
             `export ARTSTORE_K8S_BIN_DIR=$(scripts/install-k8s-tools.sh)`"
        )
    });
    let dir = PathBuf::from(dir);
    for bin in ["etcd", "kube-apiserver"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} is missing in {}: run scripts/install-k8s-tools.sh",
            dir.display()
        );
    }
    dir
}

/// A running control plane.
pub struct KubeControlPlane {
    /// Base URL of the API server (`https://127.0.0.1:<port>`).
    pub url: String,
    /// Bearer token of a `system:masters` user.
    pub token: String,
    /// A kubeconfig file for the admin user.
    pub kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl KubeControlPlane {
    /// Starts etcd and kube-apiserver; waits until `/readyz` answers.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Also starts kube-controller-manager (deployment, replicaset, job, cronjob, garbage collector).
    pub fn start_with_controllers() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(controllers: bool) -> Result<Self> {
        let bin = k8s_bin_dir();
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut plane = KubeControlPlane {
            url: String::new(),
            token: token.clone(),
            kubeconfig: path.join("kubeconfig"),
            dir,
            children: Vec::new(),
        };

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        plane.spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .arg(format!("--data-dir={}", path.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!(
                    "--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"
                ))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"
                ))
                .arg("--unsafe-no-fsync=true")
                .arg("--quota-backend-bytes=1073741824"),
        )?;
        wait_for_tcp(etcd_port, Duration::from_secs(30)).context("etcd did not start")?;

        // Service-account signing key: the API server refuses to start without one.
        let sa_key = path.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl")?;
        if !status.success() {
            bail!("openssl genrsa failed");
        }
        std::fs::write(
            path.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )?;

        let api_port = free_port();
        plane.url = format!("https://127.0.0.1:{api_port}");
        plane.spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg(format!("--secure-port={api_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--cert-dir={}", path.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    path.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!("--service-account-key-file={}", sa_key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa_key.display()
                ))
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--allow-privileged=true")
                .arg("--enable-priority-and-fairness=false"),
        )?;
        std::fs::write(&plane.kubeconfig, plane.kubeconfig_yaml())?;
        plane.wait_ready(Duration::from_secs(90))?;

        if controllers {
            plane.start_controllers()?;
        }
        Ok(plane)
    }

    /// Starts kube-controller-manager on a running plane. Its garbage collector learns about
    /// custom resources by a discovery pass every 30 s; started after the CRDs are installed,
    /// it knows them from the start.
    pub fn start_controllers(&mut self) -> Result<()> {
        let bin = k8s_bin_dir();
        let kcm_bin = bin.join("kube-controller-manager");
        if !kcm_bin.is_file() {
            bail!("kube-controller-manager is missing in {}", bin.display());
        }
        let kubeconfig = self.kubeconfig.clone();
        let sa_key = self.dir.path().join("sa.key");
        self.spawn(
            "kube-controller-manager",
            Command::new(kcm_bin)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--controllers=deployment-controller,replicaset-controller,statefulset-controller,job-controller,cronjob-controller,garbage-collector-controller,namespace-controller")
                .arg(format!("--service-account-private-key-file={}", sa_key.display()))
                .arg("--leader-elect=false")
                .arg("--secure-port=0")
                .arg("--concurrent-gc-syncs=5"),
        )
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The log of one of the processes, for assertion messages.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\ncurrent-context: test\n",
            url = self.url,
            token = self.token
        )
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                        .unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!("{name} exited with {status}:\n{tail}");
                }
            }
            // curl keeps this crate free of an HTTP/TLS stack.
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
                .arg(format!("Authorization: Bearer {}", self.token))
                .arg(format!("{}/readyz", self.url))
                .output();
            if let Ok(out) = out
                && out.stdout == b"200"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?}:\n{}",
                    self.log_of("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn wait_for_tcp(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for KubeControlPlane {
    fn drop(&mut self) {
        // Stop in reverse order: controllers, API server, then etcd.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
