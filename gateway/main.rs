//! The `claimgate` command: run | check | demo | origin | explain.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use claimgate::{compile, config, demo, explain, server};

/// mimalloc: about 16% less memory per cached token than glibc's malloc
/// (bench/RESULTS.md, `cache-memory`), and no per-thread arena growth.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "claimgate",
    version,
    about = "A JWT-aware edge gateway that speaks Istio's configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration.
    Run {
        /// A YAML file, or a folder of *.yaml / *.yml files.
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from the running process (send
        /// it SIGQUIT once this one has started) instead of binding them.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration and print every error; exit 1 if any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve the small echo origin (and, with --jwks, a key set at
    /// /jwks.json): the upstream of the demo, the tests and the benchmarks.
    Origin {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: String,
        /// A JWKS file to serve at /jwks.json.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Print the decision trace of one request, offline: listener, virtual
    /// host, token, policies, routes, destination and the answer. Exit 0
    /// when the trace is printed (whatever the decision), 2 on a bad
    /// configuration or argument.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// A token, sent as `Authorization: Bearer <TOKEN>`.
        #[arg(long)]
        token: Option<String>,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// A JWKS file standing in for every rule's jwksUri (nothing is fetched).
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        /// The time for exp/nbf checks (default: now).
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<u64>,
        /// The client address policies see (source.ip, remote.ip); default: none.
        #[arg(long, value_name = "IP")]
        peer: Option<IpAddr>,
        /// GET, POST, ...
        method: String,
        /// http://host[:port]/path?query: the port picks the listener, the
        /// host is the Host header.
        url: String,
    },
    /// Run Istio's "JWT claim based routing" task locally, with no network.
    Demo {
        /// Port of the gateway listener (the task's Gateway says 80).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => match config::load(&config) {
            Ok(loaded) => report(server::run(
                loaded,
                server::RunOptions {
                    path: Some(config),
                    upgrade,
                },
            )),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Demo { port, admin } => report(demo::run(port, &admin)),
        Command::Explain {
            config,
            token,
            headers,
            jwks,
            now,
            peer,
            method,
            url,
        } => run_explain(explain::Options {
            config,
            method,
            url,
            headers,
            token,
            jwks,
            now: now.unwrap_or_else(unix_now),
            peer,
        }),
        Command::Origin {
            listen,
            jwks,
            threads,
        } => report(serve_origin(&listen, jwks, threads)),
    }
}

fn serve_origin(listen: &str, jwks: Option<PathBuf>, threads: usize) -> Result<(), String> {
    let jwks = match jwks {
        Some(path) => Some(
            std::fs::read(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .into(),
        ),
        None => None,
    };
    let origin = claimgate::origin::Origin {
        name: "origin".into(),
        jwks,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        eprintln!("origin listening on {listen}");
        claimgate::origin::serve(listener, origin).await;
        Ok(())
    })
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code of `explain` on a bad configuration or argument.
const EXPLAIN_USAGE: u8 = 2;

fn run_explain(options: explain::Options) -> ExitCode {
    match explain::explain(&options) {
        Ok(trace) => {
            print!("{trace}");
            ExitCode::SUCCESS
        }
        Err(explain::Error::Usage(message)) => {
            eprintln!("claimgate explain: {message}");
            ExitCode::from(EXPLAIN_USAGE)
        }
        Err(explain::Error::Config(errors)) => {
            print_errors(&options.config, &errors);
            ExitCode::from(EXPLAIN_USAGE)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn print_errors(path: &std::path::Path, errors: &[config::ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("{}: {} error(s)", path.display(), errors.len());
}

/// Loads and compiles without serving: the same code `run` uses.
fn check(path: &std::path::Path) -> ExitCode {
    let (config, mut errors) = config::read(path);
    let mut summary = None;
    if let Some(config) = &config {
        match compile::compile(config, &compile::Shared::default()) {
            Ok(snapshot) => summary = Some(snapshot),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        if let (Some(config), Some(snapshot)) = (config, summary) {
            let routes: usize = snapshot
                .listeners
                .values()
                .flat_map(|t| t.hosts())
                .map(|(_, routes)| routes.len())
                .sum();
            println!(
                "{}: ok ({} files; listeners {}; {} routes; {} clusters; {} JWT issuers)",
                path.display(),
                config.files.len(),
                snapshot.listener_addrs().join(", "),
                routes,
                snapshot.clusters.len(),
                snapshot.authn.providers().len(),
            );
        }
        ExitCode::SUCCESS
    } else {
        print_errors(path, &errors);
        ExitCode::FAILURE
    }
}
