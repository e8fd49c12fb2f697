//! A private Docker daemon for one test: its own data root, exec root,
//! socket and pid file in a temp dir, no bridge and no iptables rules,
//! the `vfs` storage driver. Docker treats registries on 127.0.0.0/8 as
//! plain-HTTP registries by default. Stopped with SIGTERM on drop (it
//! stops the containerd it started), killed only if it does not exit.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub struct Dockerd {
    child: Child,
    pub dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Dockerd {
    pub async fn start() -> Dockerd {
        // Under /tmp directly: unix socket paths must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("dkrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("d.sock");
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            // Its own containerd, not a system one that may be running.
            .arg("--containerd-namespace=portcullis-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd must be installed (Debian package docker.io)");
        let mut docker = Dockerd { child, dir, socket };
        docker.wait_ready().await;
        docker
    }

    async fn wait_ready(&mut self) {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() && self.docker(&["version"]).await.status.success() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dockerd did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H <sock> <args…>` on a blocking thread.
    pub async fn docker(&self, args: &[&str]) -> Output {
        let host = format!("unix://{}", self.socket.display());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new("docker")
                .arg("-H")
                .arg(host)
                .args(&args)
                .env("DOCKER_CONFIG", "/nonexistent")
                .stdin(Stdio::null())
                .output()
                .expect("the docker client must be installed (Debian package docker.io)")
        })
        .await
        .unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd before it exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
