//! `linli-chaos`: the chaos and soak harness. Phones running the real device SDK against a real
//! `linli-server`, with the server killed, the network cut, clocks skewed and phone processes
//! killed; then every fault is healed and the end state checked: nothing acknowledged lost,
//! nothing applied twice, every phone converged on the server's values.
//!
//! ```text
//! cargo run --release -p linli-tests --bin linli-chaos -- --minutes 30
//! cargo run --release -p linli-tests --bin linli-chaos -- --seed 42 --steps 2000 --shrink
//! cargo run --release -p linli-tests --bin linli-chaos -- --store postgres --nodes 2 --minutes 30
//! ```
//!
//! Exits 0 when the run passed, 1 when a check failed (the seed, the problems and the history
//! are printed; `--shrink` then looks for the shortest failing prefix of the run).

use std::time::Duration;

use clap::Parser;
use linli_tests::chaos::{self, Config, Faults, Plant, StoreKind};

#[derive(Parser, Debug)]
#[command(about = "Chaos and soak runs: nothing acknowledged is lost, every phone converges")]
struct Args {
    /// Seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Run for this many minutes (a soak), then heal and check.
    #[arg(long)]
    minutes: Option<f64>,
    /// Most steps (default: 1500 without --minutes, unbounded with it).
    #[arg(long)]
    steps: Option<usize>,
    /// Phones at the start.
    #[arg(long, default_value_t = 5)]
    phones: usize,
    /// Most phones (new ones join during the run).
    #[arg(long, default_value_t = 8)]
    max_phones: usize,
    /// The server's store: `sqlite` (one server process) or `postgres` (several nodes on a
    /// private PostgreSQL cluster made for the run, which is crashed and recovered too).
    #[arg(long, default_value = "sqlite")]
    store: StoreKind,
    /// Server nodes on PostgreSQL.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Fault kinds to leave out, comma-separated: kill, database, proxy, clock, phone-crash,
    /// offline.
    #[arg(long, value_delimiter = ',')]
    without: Vec<String>,
    /// Chance of a proxy fault per request.
    #[arg(long, default_value_t = 0.25)]
    fault_rate: f64,
    /// Plant a fault to see the checks fail: `ack-without-commit`.
    #[arg(long)]
    plant: Option<Plant>,
    /// Chance per push that the planted fault strikes.
    #[arg(long, default_value_t = 0.2)]
    plant_rate: f64,
    /// The server's access-token lifetime, seconds.
    #[arg(long, default_value_t = 20)]
    token_ttl: u64,
    /// On failure, look for the shortest failing prefix of the run.
    #[arg(long)]
    shrink: bool,
    /// Print every event.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut faults = Faults::ALL;
    for w in &args.without {
        match w.as_str() {
            "kill" => faults.kill = false,
            "database" => faults.database = false,
            "proxy" => faults.proxy = false,
            "clock" => faults.clock = false,
            "phone-crash" => faults.phone_crash = false,
            "offline" => faults.offline = false,
            other => {
                eprintln!("linli-chaos: unknown fault kind '{other}'");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let duration = args.minutes.map(|m| Duration::from_secs_f64(m * 60.0));
    let cfg = Config {
        seed,
        phones: args.phones,
        max_phones: args.max_phones.max(args.phones),
        steps: args
            .steps
            .unwrap_or(if duration.is_some() { usize::MAX } else { 1500 }),
        duration,
        faults,
        fault_rate: args.fault_rate,
        store: args.store,
        nodes: args.nodes,
        plant: args.plant.map(|p| (p, args.plant_rate)),
        token_ttl_secs: args.token_ttl,
        verbose: args.verbose,
    };
    eprintln!("linli-chaos: seed {seed}, store {:?}", cfg.store);
    let outcome = chaos::run(&cfg);
    println!("seed                {seed}");
    println!("{}", outcome.figures);
    if outcome.ok() {
        println!("result              PASS");
        return std::process::ExitCode::SUCCESS;
    }
    println!("result              FAIL");
    eprint!("{}", outcome.failure_report(200));
    if args.shrink {
        match chaos::shrink(&cfg, outcome.figures.steps) {
            Some(small) => {
                eprintln!(
                    "shortest failing prefix: {} steps (seed {seed})",
                    small.figures.steps
                );
                eprint!("{}", small.failure_report(usize::MAX));
            }
            None => eprintln!("no shorter prefix failed (timing decides this failure)"),
        }
    }
    std::process::ExitCode::FAILURE
}
