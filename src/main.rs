//! The `portvakt` command line: run | check | token | keygen | rotate | keys | health | schema | demo.

use clap::{Parser, Subcommand};
use portvakt::observe::telemetry::{self, LogFormat};
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
    /// How log lines are written: auto (JSON unless stderr is a terminal), json or text.
    /// Filter them with RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PORTVAKT_LOG_FORMAT",
        default_value = "auto"
    )]
    log_format: LogFormat,
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
        /// The Altinn consent's id, on a route with consent_per_call (goes with --from).
        #[arg(long, requires = "from")]
        consent: Option<String>,
        /// Whom the consent is from: a fødselsnummer or organisation number, bare or as
        /// urn:altinn:person:identifier-no:... (goes with --consent).
        #[arg(long, requires = "consent")]
        from: Option<String>,
    },
    /// Generate an RSA key pair for a Maskinporten client (Samarbeidsportalen): public JWK set,
    /// private JWK, its base64 form and a PKCS#8 PEM.
    Keygen {
        /// The key's name; the kid becomes NAME-TEST.YYYY-MM-DD (or -PROD.).
        name: String,
        #[arg(long, value_enum, default_value = "test")]
        env: portvakt::cli::keygen::Env,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: usize,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Make the key pair inside an HSM token (non-extractable); only the public JWK set is
        /// written. Needs --module, --token and the PIN (--pin-file or PORTVAKT_HSM_PIN).
        #[arg(long, requires_all = ["module", "token"])]
        pkcs11: bool,
        /// The HSM vendor's PKCS#11 library.
        #[arg(long, requires = "pkcs11")]
        module: Option<PathBuf>,
        /// The token's label.
        #[arg(long, requires = "pkcs11")]
        token: Option<String>,
        /// CKA_LABEL for the new key pair (default: the kid).
        #[arg(long, requires = "pkcs11")]
        label: Option<String>,
        /// A file holding the token's user PIN; without it the PIN is read from PORTVAKT_HSM_PIN
        /// (never from the command line, where other users could see it).
        #[arg(long, requires = "pkcs11")]
        pin_file: Option<PathBuf>,
    },
    /// One pass of key renewal through Digdir's self-service API for each client with `renew`:
    /// a new key when one is due, its activation once Digdir knows it, the old key's retirement.
    /// Exit 0: done or nothing to do; 2: waiting for a new key to become usable; 1: an error.
    Rotate {
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
        /// Only this client (default: every client with `renew`).
        #[arg(long)]
        client: Option<String>,
        /// Make a new key now, whatever its predecessor's age.
        #[arg(long)]
        force: bool,
        /// Print the next step and how Digdir's set would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// When a new key must wait before it may sign, wait (at most activate_after_seconds
        /// plus 15 minutes) and finish the rotation in this run: exit 0 rather than 2, as a
        /// Kubernetes CronJob wants.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
    },
    /// Keys that portvakt renews: their status, and adopting a key registered earlier.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask a running portvakt's admin listener whether it is alive (for a container HEALTHCHECK,
    /// where there is no curl): exit 0 when /healthz answers 200.
    Health {
        /// The admin listener's /healthz URL.
        #[arg(
            long,
            env = "PORTVAKT_HEALTH_URL",
            default_value = "http://127.0.0.1:9090/healthz"
        )]
        url: String,
    },
    /// Print the configuration file's JSON Schema (draft 2020-12), for editors and validators.
    Schema,
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Each key of the keyset against Digdir's set: kid, state, age and registered exp.
    Status {
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        client: Option<String>,
    },
    /// Take a key registered earlier (a private JWK, or a PEM key with --kid) into the client's
    /// new keyset as its active key, so that renewal starts without a new registration.
    Adopt {
        #[arg(long, env = "PORTVAKT_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        client: String,
        /// The key file: a private JWK or JWK set, or PEM with --kid.
        #[arg(long)]
        from: PathBuf,
        /// The kid a PEM key is registered under.
        #[arg(long)]
        kid: Option<String>,
    },
}

fn parse_bits(s: &str) -> Result<usize, String> {
    match s {
        "2048" | "3072" | "4096" => s.parse().map_err(|_| s.to_string()),
        _ => Err("choose 2048, 3072 or 4096".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker out of work writes the log lines it collected (log_writer.rs).
        .on_thread_park(portvakt::observe::log_writer::on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portvakt: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(command(cli.command, cli.log_format))
}

/// Carries out one command, each in a function of its own.
async fn command(command: Command, log_format: LogFormat) -> ExitCode {
    // `run` sets up logging once its configuration (with any trace export) is read.
    let _logs = match command {
        Command::Run { .. } => None,
        _ => Some(telemetry::init(log_format, None)),
    };
    match command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(config, log_format).await,
        Command::Token {
            config,
            route,
            decode,
            party,
            consent,
            from,
        } => {
            let consent = consent.as_deref().zip(from.as_deref());
            token(&config, &route, party.as_deref(), consent, decode).await
        }
        Command::Keygen {
            name,
            env,
            bits,
            out,
            pkcs11,
            module,
            token,
            label,
            pin_file,
        } => {
            let hsm = match (pkcs11, module, token) {
                (true, Some(module), Some(token)) => Some(in_token(module, token, label, pin_file)),
                _ => None,
            };
            keygen(&name, env, bits, &out, hsm)
        }
        Command::Rotate {
            config,
            client,
            force,
            dry_run,
            wait,
        } => {
            let flags = portvakt::renew::command::Flags {
                force,
                dry_run,
                wait,
            };
            ExitCode::from(
                portvakt::renew::command::rotate(&config, client.as_deref(), flags).await,
            )
        }
        Command::Keys { command } => keys(command).await,
        Command::Health { url } => portvakt::cli::health::check(&url).await,
        Command::Schema => {
            let schema = portvakt::config::schema::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Demo { dir, once } => match portvakt::cli::demo::run(&dir, once).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed("demo", e),
        },
    }
}

/// Where `keygen --pkcs11` makes its key: the HSM's module and token, the key's label, and the
/// PIN (from `PORTVAKT_HSM_PIN`, or a file).
fn in_token(
    module: PathBuf,
    token: String,
    label: Option<String>,
    pin_file: Option<PathBuf>,
) -> portvakt::cli::keygen::InToken {
    portvakt::cli::keygen::InToken {
        module,
        token,
        label,
        pin_file,
        pin: std::env::var("PORTVAKT_HSM_PIN")
            .ok()
            .map(portvakt::support::secret::Secret::new),
    }
}

async fn keys(command: KeysCommand) -> ExitCode {
    use portvakt::renew::command::{adopt, status};
    ExitCode::from(match command {
        KeysCommand::Status { config, client } => status(&config, client.as_deref()).await,
        KeysCommand::Adopt {
            config,
            client,
            from,
            kid,
        } => adopt(&config, &client, &from, kid.as_deref()).await,
    })
}

/// The configuration at `path`, or its errors on stderr and the exit status for them.
fn load(path: &std::path::Path) -> Result<portvakt::config::Config, ExitCode> {
    portvakt::config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn failed(command: &str, e: anyhow::Error) -> ExitCode {
    eprintln!("portvakt {command}: {e:#}");
    ExitCode::FAILURE
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(c) => {
            print!("{}", portvakt::cli::check::summary(&c, path));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(path: PathBuf, log_format: LogFormat) -> ExitCode {
    // Every configuration problem is reported before any port is bound.
    let loaded = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let traces = telemetry::init(log_format, loaded.telemetry.as_ref());
    let code = match portvakt::app::start(&loaded).await {
        Ok(running) => {
            running.reload_from(path);
            running.until_signal().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portvakt: {e:#}");
            ExitCode::FAILURE
        }
    };
    traces.shutdown().await;
    code
}

async fn token(
    path: &std::path::Path,
    route: &str,
    party: Option<&str>,
    consent: Option<(&str, &str)>,
    decode: bool,
) -> ExitCode {
    let loaded = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match portvakt::cli::token::run(&loaded, route, party, consent, decode).await {
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

fn keygen(
    name: &str,
    env: portvakt::cli::keygen::Env,
    bits: usize,
    out: &std::path::Path,
    hsm: Option<portvakt::cli::keygen::InToken>,
) -> ExitCode {
    let today = portvakt::token::grant::unix_now() as i64;
    let made = match hsm {
        Some(hsm) => portvakt::cli::keygen::run_in_token(name, env, bits, out, today, hsm),
        None => portvakt::cli::keygen::run(name, env, bits, out, today).map(|(_, next)| ((), next)),
    };
    match made {
        Ok(((), next)) => {
            print!("{next}");
            ExitCode::SUCCESS
        }
        Err(e) => failed("keygen", e),
    }
}
