//! The scale benchmark at a size CI can afford (10 Bridges, 500 Meetings), asserting the
//! behaviour behind the figures rather than timings the machine's load could break: converged
//! objects cost zero requests, an idle operator writes nothing, a restart writes nothing, each
//! kind is watched once, a Meeting event re-reconciles a bounded number of objects, and memory
//! per Meeting stays within a bound with headroom. The full size runs from
//! `cargo bench --bench scale` (README, "Performance").

mod common;
#[path = "scale/harness.rs"]
mod harness;
#[path = "scale/probe.rs"]
mod probe;

use harness::Sizes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_size_meets_the_targets_scaled_down() {
    let sizes = Sizes::smoke();
    let fig = harness::run(&sizes, harness::operator_binary(), |line| eprintln!("scale: {line}")).await;
    eprintln!("{}", fig.table(&sizes));

    assert_eq!(fig.idle_writes, 0, "an idle operator writes nothing");
    assert!(
        fig.unchanged_reconciles >= (sizes.bridges + sizes.meetings) as u64,
        "labelling every Bridge reconciles every Bridge and Meeting: {} reconciles",
        fig.unchanged_reconciles
    );
    assert_eq!(
        fig.unchanged_requests, 0,
        "reconciles of unchanged objects make no API request"
    );
    assert_eq!(
        fig.restart_writes, 0,
        "a restart with everything in place writes nothing"
    );
    assert!(
        fig.restart_all_reconciled.is_some(),
        "every object is reconciled after a restart"
    );
    let watches: Vec<(&str, usize)> = fig.watches.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    for (resource, want) in [("bridges", 1), ("meetings", 1), ("secrets", 2), ("nodes", 1)] {
        let n = watches.iter().find(|(r, _)| *r == resource).map_or(0, |(_, n)| *n);
        assert_eq!(n, want, "{resource} watched {want} time(s): {watches:?}");
    }
    // A Meeting's creation reconciles it about twice (its create, the Secret it wrote) and not
    // again for every sibling; its Bridge at most once.
    assert!(
        fig.meeting_reconciles_per_meeting <= 3.0,
        "Meeting reconciles per Meeting created: {}",
        fig.meeting_reconciles_per_meeting
    );
    assert!(
        fig.bridge_reconciles_per_meeting <= 1.0,
        "Bridge reconciles per Meeting created: {}",
        fig.bridge_reconciles_per_meeting
    );
    // Requests and watches share one HTTP/2 connection, however many reconciles wait at once.
    assert!(
        (1..=2).contains(&fig.api_connections),
        "connections to the API server: {}",
        fig.api_connections
    );
    let per_meeting = fig.bytes_per_meeting(&sizes);
    assert!(
        per_meeting <= 12.0 * 1024.0,
        "memory per Meeting {:.1} KiB (target 4 KiB at full size; bound 12 KiB here for allocator noise)",
        per_meeting / 1024.0
    );
}
