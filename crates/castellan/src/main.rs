//! `castellan`: the keeper of the keys for AI agents.
// Only `allocator` and the call in `main` that configures it use `unsafe`.
#![deny(unsafe_code)]

mod allocator;
mod cli;
mod commands;
mod data_dir;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// Exit status for a closed stdout: what shells report for a process that
/// SIGPIPE killed (128 + 13), as `cat` and `grep` end in `... | head -1`.
const BROKEN_PIPE_STATUS: u8 = 141;

fn main() -> ExitCode {
    // SAFETY: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        allocator::purge_freed_memory_at_once();
    }
    exit_quietly_on_closed_stdout();
    let cli = cli::Cli::parse();
    logging::init(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::from(BROKEN_PIPE_STATUS),
        Err(error) => {
            let message = format!("{error:#}");
            eprintln!("error: {}", output::printable_lines(message.trim_end()));
            ExitCode::from(2)
        }
    }
}

/// Ends the process quietly with [`BROKEN_PIPE_STATUS`] when `println!`
/// finds stdout closed, as in `castellan inventory | head -1`.
///
/// Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE, and
/// `println!` turns that failure into a panic. Restoring the default SIGPIPE
/// action would take `unsafe` code and would also let a closed socket or
/// child pipe kill `castellan serve`, so the panic hook handles the one
/// panic message that `std`'s print macros raise for it instead.
fn exit_quietly_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload_as_str().is_some_and(is_closed_stdout_panic) {
            std::process::exit(BROKEN_PIPE_STATUS.into());
        }
        default_hook(info);
    }));
}

/// Tells whether a panic message is the one `print!` and `println!` raise
/// for EPIPE: "failed printing to stdout: Broken pipe (os error 32)".
fn is_closed_stdout_panic(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

/// Tells whether a command failed because stdout was closed, for commands
/// that write with `write!` and return the error instead of panicking.
///
/// NOTE: an EPIPE from another pipe that a command returns as its error
/// also ends quietly with [`BROKEN_PIPE_STATUS`], because the error chain
/// does not say which file descriptor failed.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
