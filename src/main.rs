//! The `portcullis` command: parses arguments, loads config, starts logging,
//! and runs until a signal. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use portcullis::Config;
use tokio_util::sync::CancellationToken;

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
        Command::CheckConfig { file } => check_config(&file),
        Command::Serve { config } => serve(&config),
        Command::Verify { image, config } => verify_image(&image, &config),
        Command::Trust {
            command: TrustCommand::Status { config },
        } => trust_status(&config),
        Command::VerifyBundle(args) => match verify_bundle(&args) {
            Ok(identity) => {
                println!(
                    "verified{}",
                    identity
                        .map(|i| format!(": signed by {i}"))
                        .unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rejected: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn trust_status(config_path: &std::path::Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the runtime");
        return ExitCode::from(2);
    };
    runtime.block_on(async {
        match portcullis::App::build(&config).await {
            Ok(app) => {
                let status = serde_json::json!({
                    "trust": app.trust_status(),
                    "policies": app.policy_status(),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        }
    })
}

fn verify_image(image: &str, config_path: &std::path::Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the runtime");
        return ExitCode::from(2);
    };
    runtime.block_on(async {
        let (name, reference) = match portcullis::oci::name::split_image(image) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{image}: {e}");
                return ExitCode::from(2);
            }
        };
        let app = match portcullis::App::build(&config).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let target = match app.target_for(name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::from(2);
            }
        };
        let print_findings = |findings: &[portcullis::verify::Finding]| {
            for f in findings {
                match &f.outcome {
                    Ok(()) => println!("  authority {}: met", f.authority),
                    Err(e) => println!(
                        "  authority {}: not met ({}: {})",
                        f.authority, e.reason, e.message
                    ),
                }
            }
        };
        let print_attestations = |findings: &[portcullis::verify::AttestationFinding]| {
            for f in findings {
                let condition = f
                    .condition
                    .as_ref()
                    .map(|c| format!(", condition {c}"))
                    .unwrap_or_default();
                match &f.outcome {
                    Ok(by) => println!(
                        "  attestation {} ({}{condition}): met by {}",
                        f.requirement,
                        f.predicate_type,
                        by.join(", ")
                    ),
                    Err(e) => println!(
                        "  attestation {} ({}{condition}): not met ({}: {})",
                        f.requirement, f.predicate_type, e.reason, e.message
                    ),
                }
            }
        };
        println!(
            "image: {}/{}:{reference}",
            target.upstream.name, target.repo
        );
        match app.puller.manifest(&target, &reference).await {
            Ok(v) => {
                println!("digest: {}", v.content().digest());
                println!("policy: {}", v.policy());
                match v.audit_denial() {
                    Some(r) => println!("verdict: allow (audit mode; enforce would deny: {r})"),
                    None => println!("verdict: allow"),
                }
                print_findings(v.findings());
                print_attestations(v.attestations());
                ExitCode::SUCCESS
            }
            Err(portcullis::pull::PullError::Denied(d)) => {
                println!("policy: {}", d.policy.as_deref().unwrap_or("(none)"));
                println!("verdict: deny ({}): {}", d.reason, d.message);
                print_findings(&d.findings);
                print_attestations(&d.attestations);
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("no decision: {e}");
                ExitCode::from(2)
            }
        }
    })
}

fn verify_bundle(args: &VerifyBundleArgs) -> Result<Option<String>, String> {
    use portcullis::material::{Identity, SigstoreRoot, SubjectMatch, public_key_from_pem};
    use portcullis::verify::sigstore::{self as sig, Expected, Signed};
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let root = match &args.trusted_root {
        Some(p) => SigstoreRoot::from_json(&read(p)?),
        None => SigstoreRoot::public_good(),
    }
    .map_err(|e| e.to_string())?;
    let bundle = sig::parse_bundle(&read(&args.bundle)?).map_err(|f| f.message)?;
    let digest;
    let bytes;
    let signed = match args.file_or_digest.strip_prefix("sha256:") {
        Some(_) => {
            digest = args
                .file_or_digest
                .parse::<portcullis::oci::Digest>()
                .map_err(|e| e.to_string())?;
            Signed::Digest(&digest)
        }
        None => {
            bytes = std::fs::read(&args.file_or_digest)
                .map_err(|e| format!("{}: {e}", args.file_or_digest))?;
            Signed::Bytes(&bytes)
        }
    };
    let key;
    let identity;
    let expected = match (
        &args.key,
        &args.certificate_identity,
        &args.certificate_oidc_issuer,
    ) {
        (Some(path), _, _) => {
            key = public_key_from_pem(&read(path)?)?;
            Expected::Key(&key)
        }
        (None, Some(subject), Some(issuer)) => {
            identity = Identity {
                issuer: issuer.clone(),
                subject: SubjectMatch::Exact(subject.clone()),
            };
            Expected::Keyless {
                identity: &identity,
                require_sct: true,
            }
        }
        _ => {
            return Err(
                "give --key, or --certificate-identity with --certificate-oidc-issuer".into(),
            );
        }
    };
    let verified = sig::verify_bundle(&root, &bundle, signed, expected)
        .map_err(|f| format!("{}: {}", f.reason, f.message))?;
    Ok(verified.identity)
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

fn check_config(file: &std::path::Path) -> ExitCode {
    let loaded = Config::load(file).map_err(|e| e.to_string()).and_then(|c| {
        portcullis::trust::TrustSnapshot::load(&c.authorities, 0)
            .map(|_| c)
            .map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                format!(
                    "{} has {} problem(s) in its trust material:\n{}",
                    file.display(),
                    problems.len(),
                    lines.join("\n")
                )
            })
    });
    match loaded {
        Ok(c) => {
            println!("{}: ok", file.display());
            println!(
                "  listen {} (admin {})",
                c.server.listen,
                c.admin
                    .as_ref()
                    .map_or("off".into(), |a| a.listen.to_string())
            );
            println!(
                "  cache {} (max {} bytes, tag_ttl {:?}, max_stale {:?})",
                c.cache.dir.display(),
                c.cache.max_bytes,
                c.cache.tag_ttl,
                c.cache.max_stale
            );
            for u in &c.upstreams {
                println!("  upstream {} -> {}", u.name, u.url);
            }
            for a in &c.authorities {
                println!("  authority {} {:?}", a.name, a.kind);
            }
            for p in c.policies.iter() {
                let globs: Vec<&str> = p.patterns.iter().map(|g| g.as_str()).collect();
                println!(
                    "  policy {} [{}] {:?} {}",
                    p.name,
                    globs.join(", "),
                    p.rule,
                    p.mode.as_str()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match portcullis::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "portcullis failed");
                ExitCode::FAILURE
            }
        }
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    shutdown.cancel();
}
