//! Options: run counts and knobs from the environment (`BENCH_*`).

use super::*;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Opts {
    pub(crate) runs: usize,
    pub(crate) ready_runs: usize,
    pub(crate) decomp_runs: usize,
    pub(crate) runc_runs: usize,
    pub(crate) single_creates: usize,
    pub(crate) bursts: Vec<usize>,
    pub(crate) cold_runs: usize,
    pub(crate) reap_runs: usize,
    pub(crate) reap_ttl_seconds: i64,
    pub(crate) exec_runs: usize,
    pub(crate) ttfb_runs: usize,
    pub(crate) stream_runs: usize,
    pub(crate) stream_mib: usize,
    pub(crate) concurrency: usize,
    pub(crate) concurrency_low: usize,
    pub(crate) concurrency_cap_seconds: u64,
    pub(crate) gvisor_concurrency: Vec<usize>,
    pub(crate) footprint_sandboxes: usize,
    pub(crate) footprint_stream_mib: usize,
    pub(crate) ready_cpu: String,
    pub(crate) ready_memory: String,
    pub(crate) exec_cpu: String,
    pub(crate) reap_cpu: String,
    pub(crate) exec_memory: String,
    /// `warm`: sequential warm claims (and the rounds of the cold templated Sandbox and bare Pod
    /// beside them), claims per concurrent round and rounds, create+exec runs, drained claims,
    /// refill runs and size, the sequential pool's size, resources of the template.
    pub(crate) warm_runs: usize,
    pub(crate) warm_cold_runs: usize,
    pub(crate) warm_concurrency: usize,
    pub(crate) warm_concurrent_rounds: usize,
    pub(crate) warm_exec_runs: usize,
    pub(crate) warm_exec_cold_runs: usize,
    pub(crate) warm_drained_runs: usize,
    pub(crate) warm_refill_runs: usize,
    pub(crate) warm_refill_size: usize,
    pub(crate) warm_pool: usize,
    pub(crate) warm_cpu: String,
    pub(crate) warm_memory: String,
    pub(crate) replay: bool,
    pub(crate) restart: bool,
    pub(crate) scale_sandboxes: usize,
    pub(crate) scale_namespaces: usize,
    pub(crate) scale_wave: usize,
    pub(crate) scale_parallel: usize,
    pub(crate) scale_replay: usize,
    pub(crate) only: Option<Vec<String>>,
    pub(crate) out: PathBuf,
}

pub(crate) fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub(crate) fn env_str(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Opts {
    pub(crate) fn from_env() -> Opts {
        let runs = env_usize("BENCH_RUNS", 20).max(1);
        let bursts = std::env::var("BENCH_BURSTS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .filter(|n| *n > 0)
                    .collect()
            })
            .unwrap_or_else(|| vec![50, 200]);
        let only = std::env::var("BENCH_ONLY")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        Opts {
            runs,
            ready_runs: env_usize("BENCH_READY_RUNS", runs),
            decomp_runs: env_usize("BENCH_DECOMP_RUNS", (runs / 4).max(3)),
            runc_runs: env_usize("BENCH_RUNC_RUNS", (runs / 2).max(3)),
            single_creates: env_usize("BENCH_SINGLE_CREATES", runs),
            bursts,
            cold_runs: env_usize("BENCH_COLD_RUNS", (runs / 6).clamp(1, 3)),
            reap_runs: env_usize("BENCH_REAP_RUNS", (runs / 2).max(3)),
            reap_ttl_seconds: env_usize("BENCH_REAP_TTL", 8) as i64,
            exec_runs: env_usize("BENCH_EXEC_RUNS", runs * 5 / 2),
            ttfb_runs: env_usize("BENCH_TTFB_RUNS", runs),
            stream_runs: env_usize("BENCH_STREAM_RUNS", (runs / 4).max(3)),
            stream_mib: env_usize("BENCH_STREAM_MIB", 50),
            concurrency: env_usize("BENCH_CONCURRENCY", 100),
            concurrency_low: env_usize("BENCH_CONCURRENCY_LOW", 20),
            concurrency_cap_seconds: env_usize("BENCH_CONCURRENCY_CAP", 45) as u64,
            gvisor_concurrency: std::env::var("BENCH_GVISOR_CONCURRENCY")
                .ok()
                .map(|v| {
                    v.split(',')
                        .filter_map(|s| s.trim().parse().ok())
                        .filter(|n| *n > 0)
                        .collect()
                })
                .unwrap_or_else(|| vec![5, 20]),
            footprint_sandboxes: env_usize("BENCH_FOOTPRINT_SANDBOXES", 1000),
            footprint_stream_mib: env_usize("BENCH_FOOTPRINT_STREAM_MIB", 1),
            ready_cpu: env_str("BENCH_CPU", "500m"),
            ready_memory: env_str("BENCH_MEMORY", "256Mi"),
            exec_cpu: env_str("BENCH_EXEC_CPU", "500m"),
            reap_cpu: env_str("BENCH_REAP_CPU", "250m"),
            exec_memory: env_str("BENCH_EXEC_MEMORY", "256Mi"),
            warm_runs: env_usize("BENCH_WARM_RUNS", runs),
            warm_cold_runs: env_usize("BENCH_WARM_COLD_RUNS", (runs / 2).max(3)),
            warm_concurrency: env_usize("BENCH_WARM_CONCURRENCY", 20).max(1),
            warm_concurrent_rounds: env_usize("BENCH_WARM_CONCURRENT_ROUNDS", (runs / 10).clamp(1, 3)),
            warm_exec_runs: env_usize("BENCH_WARM_EXEC_RUNS", runs),
            warm_exec_cold_runs: env_usize("BENCH_WARM_EXEC_COLD_RUNS", (runs / 4).max(3)),
            warm_drained_runs: env_usize("BENCH_WARM_DRAINED_RUNS", (runs / 4).max(3)),
            warm_refill_runs: env_usize("BENCH_WARM_REFILL_RUNS", (runs / 6).clamp(2, 3)),
            warm_refill_size: env_usize("BENCH_WARM_REFILL_SIZE", 10).max(1),
            warm_pool: env_usize("BENCH_WARM_POOL", 3).max(1),
            warm_cpu: env_str("BENCH_WARM_CPU", "25m"),
            warm_memory: env_str("BENCH_WARM_MEMORY", "128Mi"),
            replay: env_str("BENCH_REPLAY", "1") != "0",
            restart: env_str("BENCH_RESTART", "1") != "0",
            scale_sandboxes: env_usize("BENCH_SCALE", 10_000).max(1),
            scale_namespaces: env_usize("BENCH_SCALE_NAMESPACES", 20),
            scale_wave: env_usize("BENCH_SCALE_WAVE", 500),
            scale_parallel: env_usize("BENCH_SCALE_PARALLEL", 32),
            scale_replay: env_usize("BENCH_SCALE_REPLAY", 1000).max(1),
            only,
            out: PathBuf::from(env_str("BENCH_OUT", "bench")),
        }
    }

    pub(crate) fn enabled(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }
}
