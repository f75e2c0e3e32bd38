//! The `attnscope` binary; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    attnscope::cli::main()
}
