fn main() -> std::process::ExitCode {
    milkcrate::cli::run()
}
