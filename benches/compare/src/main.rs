//! `compare BENCH [options]`: one bench per process, one JSON line on
//! stdout. `benches/run.py` runs each several times and under callgrind;
//! see docs/bench/RESULTS.md for what each one measures.

mod cf;
mod machine;
mod peers;
mod sync;
mod util;

pub const BENCHES: &[&str] = &[
    "yield_coframe",
    "yield_corosensei",
    "yield_corosensei_fn",
    "yield_may",
    "spawn_coframe_coro",
    "spawn_coframe_thread",
    "spawn_tokio",
    "spawn_corosensei",
    "pingpong_coframe",
    "pingpong_coframe_migratable",
    "foreign_coframe",
    "foreign_coframe_looks",
    "pingpong_tokio",
    "pingpong_tokio_pinned",
    "foreign_tokio",
    "foreign_tokio_looks",
    "pingpong_coframe_threads",
    "pingpong_coframe_migratable_threads",
    "pingpong_tokio_threads",
    "echo_rtt_tokio",
    "echo_server_tokio",
    "mem_coframe",
    "mem_corosensei",
    "timers_coframe",
    "handoff_spin",
    "mutex_coframe",
    "mutex_tokio",
    "mutex_may",
    "chan_coframe",
    "chan_tokio",
    "chan_may",
];

fn main() {
    let a = util::Args::parse();
    match a.bench.as_str() {
        "yield_coframe" => cf::yield_coframe(&a),
        "yield_corosensei" => peers::yield_corosensei(&a),
        "yield_corosensei_fn" => peers::yield_corosensei_fn(&a),
        "yield_may" => peers::yield_may(&a),
        "spawn_coframe_coro" => cf::spawn_coframe_coro(&a),
        "spawn_coframe_thread" => cf::spawn_coframe_thread(&a),
        "spawn_tokio" => peers::spawn_tokio(&a),
        "spawn_corosensei" => peers::spawn_corosensei(&a),
        "pingpong_coframe" => cf::pingpong_coframe(&a),
        "pingpong_coframe_migratable" => cf::pingpong_coframe_migratable(&a),
        "foreign_coframe" => cf::foreign_coframe(&a),
        "foreign_coframe_looks" => cf::foreign_coframe_looks(&a),
        "pingpong_tokio" => peers::pingpong_tokio(&a),
        "pingpong_tokio_pinned" => peers::pingpong_tokio_pinned(&a),
        "foreign_tokio" => peers::foreign_tokio(&a),
        "foreign_tokio_looks" => peers::foreign_tokio_looks(&a),
        "pingpong_coframe_threads" => cf::pingpong_coframe_threads(&a),
        "pingpong_coframe_migratable_threads" => cf::pingpong_coframe_migratable_threads(&a),
        "pingpong_tokio_threads" => peers::pingpong_tokio_threads(&a),
        "echo_rtt_tokio" => peers::echo_rtt_tokio(&a),
        "echo_server_tokio" => peers::echo_server_tokio(&a),
        "mem_coframe" => cf::mem_coframe(&a),
        "mem_corosensei" => peers::mem_corosensei(&a),
        "timers_coframe" => cf::timers_coframe(&a),
        "handoff_spin" => machine::handoff_spin(&a),
        "mutex_coframe" => sync::mutex_coframe(&a),
        "mutex_tokio" => sync::mutex_tokio(&a),
        "mutex_may" => sync::mutex_may(&a),
        "chan_coframe" => sync::chan_coframe(&a),
        "chan_tokio" => sync::chan_tokio(&a),
        "chan_may" => sync::chan_may(&a),
        other => {
            eprintln!("unknown bench {other}; one of: {}", BENCHES.join(" "));
            std::process::exit(2);
        }
    }
}
