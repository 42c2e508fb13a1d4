//! `cargo bench --bench scale -- [--bridges N] [--meetings N] ...`: starts a local control plane
//! with room for every Pod, runs the release-built operator against it, creates the load in
//! parallel and prints one table (see the README's "Performance" section).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/scale/harness.rs"]
mod harness;
#[path = "../tests/scale/probe.rs"]
mod probe;

use std::time::Duration;

use clap::Parser;

/// Sizes of the run; unset flags take the full size of issue 14 (or the CI size with --smoke).
#[derive(Parser)]
#[command(name = "scale", about = "Conclave's scale benchmark")]
struct Flags {
    /// Start from the size CI runs (10 Bridges, 500 Meetings) instead of the full one.
    #[arg(long)]
    smoke: bool,
    #[arg(long)]
    bridges: Option<usize>,
    #[arg(long)]
    meetings: Option<usize>,
    /// Meetings in the first wave (memory is sampled after it); default: a tenth.
    #[arg(long)]
    first_wave: Option<usize>,
    /// Meetings created at once on the loaded operator, for create → links latency.
    #[arg(long)]
    burst: Option<usize>,
    #[arg(long)]
    participants: Option<usize>,
    #[arg(long)]
    max_participants: Option<i32>,
    /// Meetings start within this many days.
    #[arg(long)]
    days: Option<i64>,
    /// Fake nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Creates in flight at once.
    #[arg(long)]
    parallel: Option<usize>,
    /// Seconds the idle operator is watched for writes.
    #[arg(long)]
    idle: Option<u64>,
    /// Every n-th Bridge brings its own TLS Secret; 0: none.
    #[arg(long)]
    byo_tls_every: Option<usize>,
    #[arg(long)]
    sfu_max_replicas: Option<i32>,
    /// Every n-th Meeting is running already (reserves capacity at once); 0: none.
    #[arg(long)]
    running_every: Option<usize>,
    /// The operator binary to measure; default: the release build cargo made for the benchmark.
    #[arg(long)]
    operator: Option<std::path::PathBuf>,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let f = Flags::parse();
    let mut sizes = if f.smoke {
        harness::Sizes::smoke()
    } else {
        harness::Sizes::full()
    };
    sizes.bridges = f.bridges.unwrap_or(sizes.bridges);
    sizes.meetings = f.meetings.unwrap_or(sizes.meetings);
    sizes.first_wave = f
        .first_wave
        .or(f.meetings.map(|m| m / 10))
        .unwrap_or(sizes.first_wave)
        .min(sizes.meetings);
    sizes.burst = f.burst.unwrap_or(sizes.burst);
    sizes.participants = f.participants.unwrap_or(sizes.participants);
    sizes.max_participants = f.max_participants.unwrap_or(sizes.max_participants);
    sizes.days = f.days.unwrap_or(sizes.days);
    sizes.nodes = f.nodes.unwrap_or(sizes.nodes);
    sizes.parallel = f.parallel.unwrap_or(sizes.parallel);
    sizes.idle = f.idle.map_or(sizes.idle, Duration::from_secs);
    sizes.byo_tls_every = f.byo_tls_every.unwrap_or(sizes.byo_tls_every);
    sizes.sfu_max_replicas = f.sfu_max_replicas.unwrap_or(sizes.sfu_max_replicas);
    sizes.running_every = f.running_every.unwrap_or(sizes.running_every);
    let bin = f.operator.unwrap_or_else(|| harness::operator_binary().to_path_buf());
    eprintln!("operator under test: {}", bin.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    let figures = runtime.block_on(harness::run(&sizes, &bin, |line| {
        eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64())
    }));
    println!(
        "\n{} Bridges, {} Meetings ({} participants, maxParticipants {}), {} nodes\n",
        sizes.bridges, sizes.meetings, sizes.participants, sizes.max_participants, sizes.nodes
    );
    println!("{}", figures.table(&sizes));
}
