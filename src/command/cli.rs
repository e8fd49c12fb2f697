//! The command line: clap's types for every subcommand and its
//! arguments, parsed by `main.rs` and passed to this module's functions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::BundleRequest;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A verifying pull-through OCI registry proxy"
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `portcullis=debug`.
    #[arg(long, global = true, default_value = "info", env = "PORTCULLIS_LOG")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Report format: text for people, JSON (one stable object) for machines.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// The config file (watched: a change is reloaded).
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 and a summary, or every problem with its key path.
    CheckConfig {
        /// The config file (or give it with `--config`, as other commands take it).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Decide on one image exactly as the proxy would, and explain why:
    /// exit 0 allow, 1 deny, 2 when no decision could be made.
    Verify {
        /// `registry/repository[:tag|@digest]`; the registry is an upstream name.
        image: String,
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// The last decision for an image, or the decision a 403 named by its
    /// id, from the audit log: exit 0 when found, 2 when the log holds none.
    Why {
        /// `registry/repository[:tag|@digest]` (no tag: any reference), or a
        /// decision id (16 hex digits).
        subject: String,
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// The audit log to search (default: the config's `[audit] file`).
        #[arg(long)]
        audit: Option<PathBuf>,
    },
    /// What the running server is denying now (its `GET /admin/denials`,
    /// asked with the config's admin listener and token): one line per
    /// image and tag or digest, the most recent first.
    Denials {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// The admin listener's base URL (default: the config's `admin.listen`).
        #[arg(long)]
        server: Option<String>,
        /// Only what was denied within this long (`1h`, `30m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// Node runtime configuration: `nodes generate`, `nodes check`.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Verify one Sigstore bundle (the sigstore-conformance CLI protocol):
    /// exit 0 when it verifies, 1 when it is rejected, 2 when it cannot be checked.
    VerifyBundle(VerifyBundleArgs),
    /// Trust material: `portcullis trust status --config FILE`.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
}

#[derive(Clone, Subcommand)]
pub enum NodesCommand {
    /// Write the runtime files that make Portcullis a node's only route:
    /// containerd `certs.d/<registry>/hosts.toml` for every upstream name
    /// and `_default`, the containerd 1.x and 2.x CRI snippets, and
    /// `containers/registries.conf` for CRI-O and podman.
    Generate {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// The URL the runtimes reach Portcullis at (`https://host:port`).
        #[arg(long)]
        address: String,
        /// The directory to write into (`containerd/…`, `containers/…`).
        #[arg(long)]
        out: PathBuf,
        /// A CA file containerd should trust for Portcullis (path on the node).
        #[arg(long)]
        ca: Option<String>,
    },
    /// Report node configuration that would let a runtime pull around
    /// Portcullis: exit 0 when none, 1 when some. A runtime whose config
    /// directory is absent is skipped unless its file is named.
    Check {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
        /// The URL the runtimes reach Portcullis at (`https://host:port`).
        #[arg(long)]
        address: String,
        /// Where the node's filesystem is (a DaemonSet mounts it at /host).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// containerd's hosts directory [default: ROOT/etc/containerd/certs.d].
        #[arg(long)]
        containerd_hosts: Option<PathBuf>,
        /// containerd's config [default: ROOT/etc/containerd/config.toml].
        #[arg(long)]
        containerd_config: Option<PathBuf>,
        /// CRI-O/podman registries [default: ROOT/etc/containers/registries.conf].
        #[arg(long)]
        registries_conf: Option<PathBuf>,
        /// Docker's daemon config [default: ROOT/etc/docker/daemon.json].
        #[arg(long)]
        docker_daemon: Option<PathBuf>,
        /// Check again at this interval and never exit (a DaemonSet's
        /// container): each round's report goes to stdout.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Load every authority (fetching URL sources once) and print, as
    /// `GET /admin/trust` and `GET /admin/policies` do: sources,
    /// fingerprints, last refresh, availability; policies; exceptions.
    Status {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct VerifyBundleArgs {
    /// The bundle (`*.sigstore.json`, v0.1 to v0.3).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Expected certificate SAN (exact).
    #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    /// Expected OIDC issuer (exact).
    #[arg(long, requires = "certificate_identity")]
    pub certificate_oidc_issuer: Option<String>,
    /// PEM public key that must have signed (instead of an identity).
    #[arg(long, required_unless_present = "certificate_identity")]
    pub key: Option<PathBuf>,
    /// trusted_root.json (default: the public-good root embedded at build time).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// The signed file, or `sha256:<hex>` of it.
    pub file_or_digest: String,
}

impl From<VerifyBundleArgs> for BundleRequest {
    fn from(a: VerifyBundleArgs) -> BundleRequest {
        BundleRequest {
            bundle: a.bundle,
            certificate_identity: a.certificate_identity,
            certificate_oidc_issuer: a.certificate_oidc_issuer,
            key: a.key,
            trusted_root: a.trusted_root,
            file_or_digest: a.file_or_digest,
        }
    }
}
