//! A private `containerd` for one test: its own config, root, state and
//! sockets in a temp dir, the CRI plugin and snapshotters it cannot use
//! disabled, killed on drop. `ctr` talks to it with a `hosts.toml`
//! directory that points a registry host at Portcullis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// containerd namespace the tests pull into.
pub const NAMESPACE: &str = "test";

pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// `overlayfs` when the kernel lets containerd mount overlays here,
    /// else `native` (plain directory copies).
    pub snapshotter: &'static str,
}

const DISABLED: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.runtime.v1.linux",
];

impl Containerd {
    pub async fn start() -> Containerd {
        // Under /tmp directly: unix socket paths must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("c.sock");
        let disabled = DISABLED
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [{disabled}]\n\n[grpc]\naddress = \"{sock}\"\n\n[ttrpc]\naddress = \"{sock}.ttrpc\"\n\n[debug]\naddress = \"\"\n\n[metrics]\naddress = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd must be installed (Debian package containerd)");
        let mut c = Containerd {
            child,
            dir,
            socket,
            snapshotter: "native",
        };
        c.wait_ready().await;
        c.snapshotter = c.pick_snapshotter().await;
        c
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() && self.ctr(&["version"]).await.status.success() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("containerd did not start:\n{}", self.log());
    }

    /// The overlayfs plugin checks at start-up that it can mount an
    /// overlay here; if it could not, it reports an error and we use native.
    async fn pick_snapshotter(&self) -> &'static str {
        let out = self.ctr(&["plugins", "ls"]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        let overlay_ok = text.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"overlayfs") && cols.last() == Some(&"ok")
        });
        if overlay_ok { "overlayfs" } else { "native" }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address <sock> --namespace test <args…>` on a blocking thread.
    pub async fn ctr(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec![
            "--address".into(),
            self.socket.display().to_string(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            Command::new("ctr")
                .args(&full)
                .stdin(Stdio::null())
                .output()
                .expect("ctr must be installed (Debian package containerd)")
        })
        .await
        .unwrap()
    }

    /// Like [`ctr`](Self::ctr), panicking with both outputs and the daemon
    /// log unless it succeeded; returns stdout.
    pub async fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args).await;
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `<hosts.d>/<registry_host>/hosts.toml` sending every pull and
    /// resolve for `registry_host` to `proxy_url` (plain HTTP) and returns
    /// the hosts directory to pass as `--hosts-dir`.
    ///
    /// Portcullis is both the `[host]` entry and the `server`: containerd
    /// falls back to `server` after a host's 404 (and would dial the real
    /// registry if `server` were left out), and containerd 1.6 refuses a
    /// file without a `[host]` table ("invalid `host` tree"), then dials
    /// the registry directly as if there were no file at all.
    pub fn hosts_dir(&self, registry_host: &str, proxy_url: &str) -> PathBuf {
        let hosts = self.dir.path().join("hosts.d");
        let dir = hosts.join(registry_host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"{proxy_url}\"\n\n[host.\"{proxy_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
        hosts
    }

    /// Snapshot directories on disk whose tree holds `rel` (a path inside
    /// an unpacked layer), with the file's contents.
    pub fn find_in_snapshots(&self, rel: &str) -> Vec<Vec<u8>> {
        let base = self
            .dir
            .path()
            .join("root")
            .join(format!("io.containerd.snapshotter.v1.{}", self.snapshotter))
            .join("snapshots");
        let Ok(entries) = std::fs::read_dir(&base) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let root = snapshot_tree(&e.path(), self.snapshotter);
                std::fs::read(root.join(rel)).ok()
            })
            .collect()
    }
}

/// Where a snapshot's files live: overlayfs keeps them in `fs/`.
fn snapshot_tree(snapshot: &Path, snapshotter: &str) -> PathBuf {
    if snapshotter == "overlayfs" {
        snapshot.join("fs")
    } else {
        snapshot.to_path_buf()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
