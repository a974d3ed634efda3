//! Test-only helpers shared by the bounded fuzz tests (`operator/tests/fuzz_build`,
//! `exec-gateway/tests/fuzz_requests`, compiled into the cargo-fuzz targets too) and the e2e tests
//! that replay their cases: a deterministic PRNG, generic hostile strings, and the driver's knobs
//! and panic capture. What each test generates for its own domain stays in that test.
//!
//! Everything is deterministic from `FUZZ_SEED` and the case number, so a reported failure
//! replays with `FUZZ_SEED=.. FUZZ_CASE=..`; changing a generator here changes the cases of both
//! tests.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// SplitMix64 state, and how hostile (0-100, percent per field) the generators are in this case
/// (0 unless set: the operator's generators do not use it).
pub struct Rng(u64, u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed, 0)
    }
    pub fn with_hostility(seed: u64, percent: u64) -> Rng {
        Rng(seed, percent)
    }
    pub fn set_hostility(&mut self, percent: u64) {
        self.1 = percent;
    }
    #[allow(clippy::should_implement_trait)] // endless: Iterator would add nothing but `Some`
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// Whether this field gets a hostile value.
    pub fn hostile(&mut self) -> bool {
        self.below(100) < self.1
    }
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// One of `xs`, or (as often as any one of them) a random value.
    pub fn pick_or<T: Copy>(&mut self, xs: &[T], random: fn(u64) -> T) -> T {
        let i = self.below(xs.len() as u64 + 1) as usize;
        if i == xs.len() {
            random(self.next())
        } else {
            xs[i]
        }
    }
    /// A list length: mostly small, sometimes empty, sometimes up to `large`.
    pub fn len(&mut self, large: usize) -> usize {
        match self.below(20) {
            0..=4 => 0,
            5..=16 => self.range(1, 4) as usize,
            17 | 18 => self.range(5, 40.min(large as i64)) as usize,
            _ => self.range(5, large.max(5) as i64) as usize,
        }
    }
}

/// A number from the environment (decimal or `0x` hex), or `default` when unset or empty.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        _ => default,
    }
}

/// The generator of one case: independent of every other case, so a case replays alone.
pub fn case_rng(seed: u64, case: u64) -> Rng {
    let mut r = Rng::new(seed ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next();
    r
}

/// `n` random ASCII characters (control characters included).
pub fn ascii_string(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| (rng.below(128) as u8) as char).collect()
}

/// `n` characters: control characters, non-ASCII letters, emoji, one of `specials` (the caller's
/// troublemakers: bidi overrides, zero-width spaces, NUL...), or ASCII letters.
pub fn unicode_string(rng: &mut Rng, n: usize, specials: &[char]) -> String {
    (0..n)
        .map(|_| match rng.below(6) {
            0 => char::from_u32(rng.below(0x20) as u32).unwrap(),
            1 => char::from_u32(0x80 + rng.below(0x780) as u32).unwrap(),
            2 => char::from_u32(0x1F300 + rng.below(0x300) as u32).unwrap(),
            3 => *rng.pick(specials),
            _ => (b'a' + rng.below(26) as u8) as char,
        })
        .collect()
}

/// A valid RFC 1123 DNS label of 1 to 63 characters.
pub fn dns_label(rng: &mut Rng) -> String {
    let n = rng.range(1, 63) as usize;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let mut s: Vec<u8> = (0..n).map(|_| *rng.pick(alphabet)).collect();
    if s[0] == b'-' {
        s[0] = b'a';
    }
    if s[n - 1] == b'-' {
        s[n - 1] = b'z';
    }
    String::from_utf8(s).unwrap()
}

/// `s` cut to 4000 bytes for a failure report.
pub fn clip(mut s: String) -> String {
    if s.len() > 4000 {
        let mut cut = 4000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...<truncated>");
    }
    s
}

/// Fewest cases a run makes before its time budget may stop it, and that the coverage checks need.
pub const MIN_CASES: u64 = 2000;

/// The driver's knobs: `FUZZ_SEED`, `FUZZ_ITERATIONS` (20,000), `FUZZ_SECONDS` (10) and
/// `FUZZ_CASE` (replay one case).
pub struct Knobs {
    pub seed: u64,
    pub iterations: u64,
    pub budget: Duration,
    pub only: Option<u64>,
}

impl Knobs {
    pub fn from_env(default_seed: u64) -> Knobs {
        Knobs {
            seed: env_u64("FUZZ_SEED", default_seed),
            iterations: env_u64("FUZZ_ITERATIONS", 20_000),
            budget: Duration::from_secs(env_u64("FUZZ_SECONDS", 10)),
            only: std::env::var("FUZZ_CASE")
                .ok()
                .map(|c| c.trim().parse::<u64>().expect("FUZZ_CASE")),
        }
    }

    /// The line a test prints first, so its run can be repeated.
    pub fn banner(&self, test: &str) -> String {
        format!(
            "{test}: FUZZ_SEED={:#x} FUZZ_ITERATIONS={} FUZZ_SECONDS={}",
            self.seed,
            self.iterations,
            self.budget.as_secs()
        )
    }

    /// The case numbers to run: the one of `FUZZ_CASE`, or 0.. `FUZZ_ITERATIONS`.
    pub fn cases(&self) -> Box<dyn Iterator<Item = u64>> {
        match self.only {
            Some(c) => Box::new(std::iter::once(c)),
            None => Box::new(0..self.iterations),
        }
    }

    /// Whether the time budget is spent after `done` cases (never when replaying one case, and
    /// never before [`MIN_CASES`]: a slow machine runs longer rather than check less).
    pub fn out_of_time(&self, start: Instant, done: u64) -> bool {
        self.only.is_none() && done >= MIN_CASES && start.elapsed() > self.budget
    }

    /// Whether the coverage checks (both sides of every branch reached) apply to a run of `done`
    /// cases: always, except when replaying one case. Panics when a run was cut below
    /// [`MIN_CASES`] (`FUZZ_ITERATIONS` set lower), so they are never skipped silently.
    pub fn check_coverage(&self, done: u64) -> bool {
        if self.only.is_some() {
            return false;
        }
        assert!(
            done >= MIN_CASES,
            "only {done} cases ran (FUZZ_ITERATIONS={}): the coverage checks need at least {MIN_CASES}",
            self.iterations
        );
        true
    }
}

thread_local! {
    /// Where the last caught panic happened (set by the hook of [`PanicCapture`]).
    static PANIC_AT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A panic hook.
type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send>;

/// While alive, panics are not printed but their location is remembered for [`panic_message`]
/// (they are caught and reported with their input); dropping it puts the previous hook back.
pub struct PanicCapture(Option<Hook>);

impl PanicCapture {
    #[allow(clippy::new_without_default)]
    pub fn new() -> PanicCapture {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            let at = info.location().map(|l| l.to_string()).unwrap_or_default();
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        }));
        PanicCapture(Some(previous))
    }
}

impl Drop for PanicCapture {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            std::panic::set_hook(previous);
        }
    }
}

/// A caught panic's message and where it happened.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into());
    format!("{msg} (at {})", PANIC_AT.with(|a| a.borrow().clone()))
}
