//! The `attnscope` binary: clap definitions and printing (`cli/`); the work is done by the workspace's
//! crates (see ARCHITECTURE.md).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
