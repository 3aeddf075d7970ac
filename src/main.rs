//! The `portvakt` command line: run | check | token | keygen | demo.

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
    /// Fetch one token exactly as a route would and print it as JSON (for debugging an integration).
    Token {
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
        /// The route whose client, key and scopes to use.
        #[arg(long)]
        route: String,
        /// Also print the token's decoded header and claims (read, not verified).
        #[arg(long)]
        decode: bool,
        /// The organisation to act for, on a route with consumer_orgs or systemuser_orgs
        /// (default: the route's consumer_org or systemuser_org).
        #[arg(long)]
        party: Option<String>,
    },
    /// Generate an RSA key pair for a Maskinporten client (Samarbeidsportalen): public JWK set,
    /// private JWK, its base64 form and a PKCS#8 PEM.
    Keygen {
        /// The key's name; the kid becomes NAME-TEST.YYYY-MM-DD (or -PROD.).
        name: String,
        #[arg(long, value_enum, default_value = "test")]
        env: portvakt::keygen::Env,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: usize,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
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

fn parse_bits(s: &str) -> Result<usize, String> {
    match s {
        "2048" | "3072" | "4096" => s.parse().map_err(|_| s.to_string()),
        _ => Err("choose 2048, 3072 or 4096".into()),
    }
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
                        running.reload_from(config.clone());
                        running.until_signal().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("portvakt: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Token {
                config,
                route,
                decode,
                party,
            } => {
                let loaded = match portvakt::config::load(&config) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                match portvakt::token_command::run(&loaded, &route, party.as_deref(), decode).await
                {
                    Ok(outcome) => {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcome.json).unwrap_or_default()
                        );
                        match outcome.error {
                            None => ExitCode::SUCCESS,
                            Some(line) => {
                                eprintln!("portvakt token: {line}");
                                ExitCode::FAILURE
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("portvakt token: {e:#}");
                        ExitCode::from(EXIT_CONFIG)
                    }
                }
            }
            Command::Keygen {
                name,
                env,
                bits,
                out,
            } => {
                let today = portvakt::token::grant::unix_now() as i64;
                match portvakt::keygen::run(&name, env, bits, &out, today) {
                    Ok((_, next)) => {
                        print!("{next}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("portvakt keygen: {e:#}");
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
