//! The `milkcrate` command: one file per subcommand. Each returns an exit code: 0 only on
//! success, errors as one line on stderr.

mod backup;
mod check;
pub(crate) mod log_writer;
mod migrate;
mod package;
mod redeploy;
mod remote;
mod reset_password;
mod serve;
mod setup;
mod status;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};

#[derive(Parser)]
#[command(
    name = "milkcrate",
    version,
    about = "Deploy containerized apps from a web page.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server (admin UI). Every setting below can also come from its environment variable.
    Serve(Box<crate::config::ServeArgs>),
    /// Set the admin password from the terminal (prompts twice, or reads one line from stdin) and sign out every session.
    ResetPassword(reset_password::Args),
    /// Create the data folder, database, secret key file and admin password (once; a second run changes nothing).
    Setup(setup::Args),
    /// Check this machine: settings, data folder, production readiness, router, Docker Engine, network.
    Check(Box<check::Args>),
    /// List the apps with their routes and status.
    Status(Box<status::Args>),
    /// Package a folder into a ZIP that deploys (honours .dockerignore and common excludes).
    Package(package::Args),
    /// Write a small sample app ZIP that deploys.
    PackageSample(package::SampleArgs),
    /// Write a .tar.gz of the database (a consistent snapshot, safe while serving), audit log, secret key and app sources, with checksums.
    Backup(backup::BackupArgs),
    /// Restore a backup (verified first; the current data is kept aside), or --list the backups.
    Restore(backup::RestoreArgs),
    /// Adopt an install of the original milkcrate: database, password, settings, audit log, sources.
    Migrate(migrate::Args),
    /// Create an API token at the server's terminal (`token create NAME --scope deploy --expires 90d`).
    Token(token::Args),
    /// Save a server and API token for the commands below (~/.config/milkcrate/config.toml).
    Login(remote::LoginArgs),
    /// Package a folder and deploy it to the server: creates the app or updates it, follows the build log.
    Deploy(remote::DeployArgs),
    /// List the server's apps.
    Apps(remote::AppsArgs),
    /// Print an app's container log (-f to follow).
    Logs(remote::LogsArgs),
    /// List, set or unset an app's environment variables.
    Env(remote::EnvArgs),
    /// Roll an app back to its previous image.
    Rollback(remote::AppArgs),
    /// Restart an app.
    Restart(remote::AppArgs),
    /// Delete an app (with --yes).
    Delete(remote::DeleteArgs),
    /// List, add or remove an app's custom domains.
    Domains(remote::DomainsArgs),
    /// List volumes and their files, or upload a file into one.
    Volumes(remote::VolumesArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The server logs a line per request: batched. Other commands write theirs at once.
    let batched = matches!(cli.command, Command::Serve(_));
    if let Err(e) = init_logging(batched) {
        return fail(e);
    }
    let code = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::ResetPassword(args) => reset_password::run(args),
        Command::Setup(args) => setup::run(args),
        Command::Check(args) => check::run(*args),
        Command::Status(args) => status::run(*args),
        Command::Package(args) => package::run(args),
        Command::PackageSample(args) => package::sample(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Token(args) => token::run(args),
        Command::Login(args) => remote::login(args),
        Command::Deploy(args) => remote::deploy(args),
        Command::Apps(args) => remote::apps(args),
        Command::Logs(args) => remote::logs(args),
        Command::Env(args) => remote::env(args),
        Command::Rollback(args) => remote::rollback(args),
        Command::Restart(args) => remote::restart(args),
        Command::Delete(args) => remote::delete(args),
        Command::Domains(args) => remote::domains(args),
        Command::Volumes(args) => remote::volumes(args),
    };
    log_writer::flush();
    code
}

/// The filter when none is given: warnings from everything, milkcrate's own info lines.
fn default_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("milkcrate", LevelFilter::INFO)
}

/// Parses a `target=level,...` filter (`info`, `milkcrate=debug,hyper=warn`). Targets it does not
/// name log warnings, unless the filter gives a bare level of its own.
fn parse_filter(spec: &str) -> Result<Targets, String> {
    let targets: Targets = spec.trim().parse().map_err(|e| {
        format!(
            "`{spec}` is not a log filter ({e}); write a level (error, warn, info, debug, trace) \
             or target=level pairs separated by commas, e.g. `milkcrate=debug,warn`"
        )
    })?;
    Ok(if targets.default_level().is_some() {
        targets
    } else {
        targets.with_default(LevelFilter::WARN)
    })
}

/// Sets up the server's log on stderr: filter from `MILKCRATE_LOG` (or `RUST_LOG`), text or JSON
/// lines (`MILKCRATE_LOG_FORMAT`). A bad `MILKCRATE_LOG` stops the program; a `RUST_LOG` meant for
/// another tool (say, with `EnvFilter`'s span syntax) only earns a warning and the default filter.
fn init_logging(batched: bool) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let settings = crate::config::LogSettings::from_env()?;
    let filter = match &settings.filter {
        None => default_filter(),
        Some((var, spec)) => match parse_filter(spec) {
            Ok(f) => f,
            Err(e) if *var == "RUST_LOG" => {
                eprintln!("milkcrate: RUST_LOG ignored: {e}");
                default_filter()
            }
            Err(e) => return Err(format!("{var}: {e}")),
        },
    };
    let registry = tracing_subscriber::registry().with(filter);
    let writer = log_writer::Batched::start(batched);
    let coloured = !settings.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !coloured {
        log_writer::write_access_lines(if settings.json {
            log_writer::Style::Json
        } else {
            log_writer::Style::Text
        });
    }
    let _ = if settings.json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(coloured),
            )
            .try_init()
    };
    Ok(())
}

/// Prints `milkcrate: <message>` and returns the failure code.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    // What the log holds comes first: the fatal line is the last one.
    log_writer::flush();
    eprintln!("milkcrate: {message}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn log_filters_parse_levels_and_targets() {
        let info = parse_filter("info").expect("a level");
        assert!(info.would_enable("hyper", &Level::INFO));
        assert!(!info.would_enable("milkcrate", &Level::DEBUG));
        let debug = parse_filter("milkcrate=debug").expect("a target");
        assert!(debug.would_enable("milkcrate::server", &Level::DEBUG));
        assert!(debug.would_enable("hyper", &Level::WARN));
        assert!(!debug.would_enable("hyper", &Level::INFO));
        let mixed = parse_filter(" milkcrate=trace,error ").expect("both");
        assert!(!mixed.would_enable("hyper", &Level::WARN));
        let err = parse_filter("milkcrate[span]=loud").expect_err("not a filter");
        assert!(err.contains("is not a log filter"), "{err}");
    }
}
