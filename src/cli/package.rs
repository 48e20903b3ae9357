//! `milkcrate package` and `milkcrate package-sample`: ZIPs that deploy.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::archive::package::{package_dir, write_sample};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to package.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The ZIP to write (`.zip` is added when missing).
    #[arg(short, long, default_value = "app.zip")]
    output: PathBuf,
    /// Leave out paths matching this glob (on whole path components); repeatable.
    #[arg(short, long)]
    exclude: Vec<String>,
    /// Keep the .git folder (left out by default).
    #[arg(long)]
    include_git: bool,
}

pub fn run(args: Args) -> ExitCode {
    let mut output = args.output.clone();
    if output.extension().is_none_or(|e| e != "zip") {
        output.set_extension("zip");
    }
    if !args.dir.is_dir() {
        return super::fail(format!("{} is not a folder", args.dir.display()));
    }
    match package_dir(&args.dir, &output, &args.exclude, args.include_git) {
        Ok(r) if r.files == 0 => {
            let _ = std::fs::remove_file(&output);
            super::fail(format!(
                "nothing to package in {} (everything was excluded)",
                args.dir.display()
            ))
        }
        Ok(r) => {
            if let Some(compose) = &r.kept_env_for {
                println!(
                    "Included .env: {compose} uses ${{...}} variables, which milkcrate reads from it. Check it holds nothing you would not upload (leave it out with -e .env)."
                );
            }
            if let Some(compose) = &r.left_out_env_for {
                eprintln!(
                    "milkcrate: warning: left out .env as asked, but {compose} uses ${{...}} variables: set them another way or the deploy may fail"
                );
            }
            for link in &r.skipped_links {
                eprintln!("milkcrate: warning: left out the link {link} (uploads refuse links)");
            }
            if !r.has_build_file {
                eprintln!(
                    "milkcrate: warning: no Dockerfile or compose file at the top of {}: milkcrate will refuse this ZIP",
                    args.dir.display()
                );
            }
            println!(
                "Wrote {} ({} files, {:.1} KiB). Deploy it from the Deploy page.",
                output.display(),
                r.files,
                r.bytes as f64 / 1024.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The ZIP to write.
    #[arg(short, long, default_value = "sample-app.zip")]
    output: PathBuf,
    /// The busybox image the sample builds from (pulled by the engine when missing).
    #[arg(long, default_value = "busybox:1.36")]
    base_image: String,
}

pub fn sample(args: SampleArgs) -> ExitCode {
    match write_sample(&args.output, &args.base_image) {
        Ok(()) => {
            println!(
                "Wrote {}: a busybox web app on port 8080. Deploy it at a route such as /sample.",
                args.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}
