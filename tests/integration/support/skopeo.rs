//! `skopeo` as a client: copies from a registry (through Portcullis) to a
//! local `dir:` or `oci:` layout, with a policy that accepts anything so no
//! system trust configuration takes part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A skopeo invocation context with its own policy file and home.
pub struct Skopeo {
    pub dir: tempfile::TempDir,
    policy: PathBuf,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Skopeo { dir, policy }
    }

    /// A fresh destination path under this context's temp dir.
    pub fn dest(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `skopeo copy` from `src` (a `docker://` reference over plain HTTP) to
    /// `dest`, with `global` options such as `--override-arch`.
    pub async fn copy(&self, global: &[&str], src: &str, dest: &str) -> Output {
        self.copy_with(global, &[], src, dest).await
    }

    /// `skopeo copy` with extra options for the copy itself (`--all`).
    pub async fn copy_with(&self, global: &[&str], copy: &[&str], src: &str, dest: &str) -> Output {
        let mut args = global.to_vec();
        args.extend(["copy", "--src-tls-verify=false", "--src-no-creds"]);
        args.extend(copy);
        args.extend([src, dest]);
        self.run(&args).await
    }

    /// `skopeo <args…>` with this context's policy and an empty home (no
    /// stored credentials), on a blocking thread so the in-process proxy
    /// keeps serving.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec!["--policy".into(), self.policy.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let home = self.dir.path().join("home");
        tokio::task::spawn_blocking(move || {
            Command::new("skopeo")
                .args(&full)
                .env("HOME", &home)
                .env_remove("REGISTRY_AUTH_FILE")
                .output()
                .expect("skopeo must be installed (Debian package skopeo)")
        })
        .await
        .unwrap()
    }
}

/// Panics with skopeo's output unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a blob in a `dir:` copy (file named by the digest's hex).
pub fn dir_blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join(digest.trim_start_matches("sha256:"))
}

/// The path of a blob in an OCI image layout.
pub fn oci_blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}
