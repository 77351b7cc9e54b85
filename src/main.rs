//! The `botwire` binary: a thin shell over [`botwire::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    botwire::cli::main()
}
