//! The `portcullis` command: parses arguments, starts logging, calls the
//! subcommand in [`portcullis::command`], prints its report and exits with
//! its code. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use portcullis::command::{self, BundleRequest, Failure, Report};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A verifying pull-through OCI registry proxy"
)]
struct Cli {
    /// Log filter, e.g. `info` or `portcullis=debug`.
    #[arg(long, global = true, default_value = "info", env = "PORTCULLIS_LOG")]
    log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 and a summary, or every problem with its key path.
    CheckConfig { file: PathBuf },
    /// Decide on one image exactly as the proxy would, and explain why:
    /// exit 0 allow, 1 deny, 2 when no decision could be made.
    Verify {
        /// `registry/repository[:tag|@digest]`; the registry is an upstream name.
        image: String,
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
    /// Verify one Sigstore bundle (the sigstore-conformance CLI protocol):
    /// exit 0 when it verifies, 1 when it is rejected.
    VerifyBundle(VerifyBundleArgs),
    /// Trust material: `portcullis trust status --config FILE`.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Load every authority (fetching URL sources once) and print, as
    /// `GET /admin/trust` and `GET /admin/policies` do: sources,
    /// fingerprints, last refresh, availability; policies; exceptions.
    Status {
        #[arg(long, default_value = "/etc/portcullis/portcullis.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct VerifyBundleArgs {
    /// The bundle (`*.sigstore.json`, v0.1 to v0.3).
    #[arg(long)]
    bundle: PathBuf,
    /// Expected certificate SAN (exact).
    #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
    certificate_identity: Option<String>,
    /// Expected OIDC issuer (exact).
    #[arg(long, requires = "certificate_identity")]
    certificate_oidc_issuer: Option<String>,
    /// PEM public key that must have signed (instead of an identity).
    #[arg(long, required_unless_present = "certificate_identity")]
    key: Option<PathBuf>,
    /// trusted_root.json (default: the public-good root embedded at build time).
    #[arg(long)]
    trusted_root: Option<PathBuf>,
    /// The signed file, or `sha256:<hex>` of it.
    file_or_digest: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => finish(command::check_config(&file)),
        Command::Serve { config } => match command::serve(&config, stop_on_signal()) {
            Ok(()) => command::Exit::Success.into(),
            Err(e @ command::ServeError::Run(_)) => {
                tracing::error!(error = %e, "portcullis failed");
                e.exit().into()
            }
            Err(e) => fail(e),
        },
        Command::Verify { image, config } => finish(command::verify_image(&image, &config)),
        Command::Trust {
            command: TrustCommand::Status { config },
        } => finish(command::trust_status(&config)),
        Command::VerifyBundle(a) => finish(command::verify_bundle(&BundleRequest {
            bundle: a.bundle,
            certificate_identity: a.certificate_identity,
            certificate_oidc_issuer: a.certificate_oidc_issuer,
            key: a.key,
            trusted_root: a.trusted_root,
            file_or_digest: a.file_or_digest,
        })),
    }
}

/// Prints a report on stdout (and its diagnostic on stderr), or the
/// failure on stderr, and returns the exit code either says.
fn finish<R: Report, E: Failure>(result: Result<R, E>) -> ExitCode {
    match result {
        Ok(report) => {
            print!("{report}");
            if let Some(line) = report.diagnostic() {
                eprintln!("{line}");
            }
            report.exit().into()
        }
        Err(e) => fail(e),
    }
}

fn fail<E: Failure>(e: E) -> ExitCode {
    eprintln!("{e}");
    e.exit().into()
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(portcullis::log::escaped_fields()).init(),
    }
}

/// Resolves at the first SIGTERM or SIGINT; never, if the handlers cannot
/// be installed.
async fn stop_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
