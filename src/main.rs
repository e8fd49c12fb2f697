//! The `portcullis` command: parses arguments, starts logging, calls the
//! subcommand in [`portcullis::command`], prints its report and exits with
//! its code. No logic lives here.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use portcullis::command::cli::{Cli, Command, LogFormat, NodesCommand, Output, TrustCommand};
use portcullis::command::nodes;
use portcullis::command::{self, Failure, Report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    let out = cli.output;
    match cli.command {
        // Clap requires one of the two.
        Command::CheckConfig { file, config } => finish(
            out,
            command::check_config(&file.or(config).unwrap_or_default()),
        ),
        Command::Serve { config } => match command::serve(&config, stop_on_signal()) {
            Ok(()) => command::Exit::Success.into(),
            Err(e @ command::ServeError::Run(_)) => {
                tracing::error!(error = %e, "portcullis failed");
                e.exit().into()
            }
            Err(e) => fail(e),
        },
        Command::Verify { image, config } => finish(out, command::verify_image(&image, &config)),
        Command::Trust {
            command: TrustCommand::Status { config },
        } => finish(out, command::trust_status(&config)),
        Command::VerifyBundle(a) => finish(out, command::verify_bundle(&a.into())),
        Command::Nodes {
            command: c @ NodesCommand::Generate { .. },
        } => finish(out, nodes_generate(c)),
        Command::Nodes {
            command: c @ NodesCommand::Check {
                every: Some(every), ..
            },
        } => loop {
            let _ = finish(out, nodes_check(c.clone()));
            std::thread::sleep(every);
        },
        Command::Nodes { command } => finish(out, nodes_check(command)),
        Command::Denials {
            config,
            server,
            since,
        } => finish(out, command::denials(&config, server.as_deref(), since)),
        Command::Why {
            subject,
            config,
            audit,
        } => finish(out, command::why(&subject, &config, audit.as_deref())),
    }
}

fn nodes_generate(command: NodesCommand) -> Result<nodes::GenerateReport, nodes::NodesError> {
    match command {
        NodesCommand::Generate {
            config,
            address,
            out,
            ca,
        } => nodes::generate(
            &config,
            &nodes::Address::parse(&address)?,
            &out,
            ca.as_deref(),
        ),
        NodesCommand::Check { .. } => unreachable!("dispatched to nodes_check"),
    }
}

fn nodes_check(command: NodesCommand) -> Result<nodes::CheckReport, nodes::NodesError> {
    match command {
        NodesCommand::Generate { .. } => unreachable!("dispatched to nodes_generate"),
        NodesCommand::Check {
            config,
            address,
            root,
            containerd_hosts,
            containerd_config,
            registries_conf,
            docker_daemon,
            every: _,
        } => {
            let address = nodes::Address::parse(&address)?;
            // A runtime is looked at when its file is named or its config
            // directory exists on the node.
            let pick = |named: Option<std::path::PathBuf>, dir: &str, file: &str| {
                named.or_else(|| {
                    let d = root.join(dir);
                    d.is_dir().then(|| d.join(file))
                })
            };
            let hosts = pick(containerd_hosts, "etc/containerd", "certs.d");
            let ctrd = pick(containerd_config, "etc/containerd", "config.toml");
            let regs = pick(registries_conf, "etc/containers", "registries.conf");
            let docker = pick(docker_daemon, "etc/docker", "daemon.json");
            let files = nodes::NodeFiles {
                containerd_hosts: hosts.as_deref(),
                containerd_config: ctrd.as_deref(),
                registries_conf: regs.as_deref(),
                docker_daemon: docker.as_deref(),
            };
            nodes::check(&config, &address, &files)
        }
    }
}

/// Prints a report on stdout (and its diagnostic on stderr), or the
/// failure on stderr, and returns the exit code either says. A reader that
/// went away (`| head`) ends the output quietly, not with a panic.
fn finish<R: Report, E: Failure>(format: Output, result: Result<R, E>) -> ExitCode {
    match result {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = match format {
                Output::Text => write!(out, "{report}"),
                Output::Json => serde_json::to_writer(&mut out, &report)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out)),
            }
            .and_then(|()| out.flush());
            if let Some(line) = report.diagnostic() {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            report.exit().into()
        }
        Err(e) => fail(e),
    }
}

fn fail<E: Failure>(e: E) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{e}");
    e.exit().into()
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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
