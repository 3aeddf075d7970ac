//! The `portvakt` command line: run | check | demo.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for a configuration that cannot be used (EX_USAGE, as linkerd does).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "portvakt",
    version,
    about = "Authenticating egress proxy for Maskinporten"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: route calls, fetch and inject Maskinporten tokens, stream to the upstreams.
    Run {
        /// The YAML configuration.
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration and load every key; print a summary with secrets left out.
    Check {
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
    },
    /// Start a mock Maskinporten, an echo upstream and portvakt on loopback, and show it working.
    Demo {
        /// Where to write demo.yaml and the demo key.
        #[arg(long, default_value = "config")]
        dir: PathBuf,
        /// Make one call through the proxy, print it and exit.
        #[arg(long)]
        once: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portvakt: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check { config } => match portvakt::config::load(&config) {
                Ok(c) => {
                    print!("{}", portvakt::check::summary(&c, &config));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Command::Run { config } => {
                // Every configuration problem is reported before any port is bound.
                let loaded = match portvakt::config::load(&config) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                match portvakt::app::start(&loaded).await {
                    Ok(running) => {
                        running.until_signal().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("portvakt: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Demo { dir, once } => match portvakt::demo::run(&dir, once).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portvakt demo: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}
