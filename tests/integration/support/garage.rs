//! A real S3-compatible object store on loopback: Garage (`cargo install
//! garage --locked`), one node, one bucket and one key made by the setup
//! (see `../shared/reference/garage.md`). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub const REGION: &str = "garage";

pub struct Garage {
    child: Child,
    pub dir: tempfile::TempDir,
    pub s3_port: u16,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    config: PathBuf,
}

/// The `garage` binary: on PATH, else where `cargo install` puts it.
fn binary() -> PathBuf {
    let on_path = Command::new("garage")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return PathBuf::from("garage");
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let installed = home.join("bin/garage");
    assert!(
        installed.exists(),
        "garage must be installed (cargo install garage --locked; .ci/run does it)"
    );
    installed
}

impl Garage {
    pub async fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3_port, admin) = (free_port(), free_port(), free_port());
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = (rpc as usize * 31 + i * 7) as u8;
        }
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                hex::encode(secret),
                d = dir.path().display(),
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("garage.log")).unwrap())
            .spawn()
            .expect("garage starts");
        let mut garage = Garage {
            child,
            dir,
            s3_port,
            bucket: "portcullis".into(),
            key_id: String::new(),
            secret: String::new(),
            config,
        };
        let mut node = None;
        for _ in 0..200 {
            let out = garage.cli(&["node", "id", "-q"]);
            if out.status.success() {
                let id = String::from_utf8_lossy(&out.stdout);
                node = id.trim().split('@').next().map(str::to_string);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = node.expect("garage did not start");
        // `node id` reads a local file; the RPC listener may come later
        // (seen under the full suite's load).
        let assign = ["layout", "assign", "-z", "dc1", "-c", "1G", &node];
        for _ in 0..200 {
            if garage.cli(&assign).status.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        garage.ok(&["layout", "show"]);
        garage.ok(&["layout", "apply", "--version", "1"]);
        // The layout takes a moment to be in force.
        for _ in 0..100 {
            if garage
                .cli(&["bucket", "create", "portcullis"])
                .status
                .success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = garage.ok(&["key", "create", "pkey"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in:\n{key}"))
        };
        garage.key_id = field("Key ID");
        garage.secret = field("Secret key");
        garage.ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "portcullis",
            "--key",
            "pkey",
        ]);
        garage
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Writes the key files into `dir` and returns the `[cache.s3]` table.
    pub fn cache_table(&self, dir: &Path, prefix: &str) -> String {
        std::fs::write(dir.join("s3.key"), &self.key_id).unwrap();
        std::fs::write(dir.join("s3.secret"), &self.secret).unwrap();
        format!(
            "[cache.s3]\nbucket = \"{}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\nregion = \"{REGION}\"\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
            self.bucket,
            self.endpoint(),
            dir.join("s3.key").display(),
            dir.join("s3.secret").display(),
        )
    }

    /// A client on the bucket, for tests that look at or tamper with objects.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(REGION)
            .with_endpoint(self.endpoint())
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .build()
            .unwrap()
    }
}

impl Garage {
    /// Kills the server: the bucket is unreachable from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server without closing its sockets (SIGSTOP): connections
    /// are accepted by the kernel, requests are never answered.
    pub fn freeze(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        assert!(status.success(), "garage frozen");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
