//! The `milkcrate` command: one file per subcommand. Each returns an exit code: 0 only on
//! success, errors as one line on stderr.

mod backup;
mod check;
mod migrate;
mod package;
mod redeploy;
mod reset_password;
mod serve;
mod setup;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
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
    }
}

fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("milkcrate", LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}

/// Prints `milkcrate: <message>` and returns the failure code.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("milkcrate: {message}");
    ExitCode::FAILURE
}
