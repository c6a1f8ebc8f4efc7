//! `baton`: run, validate and draw multi-agent workflows.
//!
//! This is the composition root: the only place that picks a concrete store and concrete model
//! providers. Everything else receives them through traits.

mod args;
mod cmd;
mod crash;
mod factory;
mod render;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `baton events RUN | head`: a closed stdout ends the output, it is not a crash.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_else(|| info.payload().downcast_ref::<&str>().copied().unwrap_or(""));
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help and version to stdout with success, usage errors with code 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cmd::store::InvalidStore>().is_some() {
                ExitCode::from(cmd::EXIT_INVALID)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
