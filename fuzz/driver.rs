//! A bounded fuzz driver for the stable toolchain, shared by the workspace's `fuzz` tests
//! through `#[path]` (each test binary compiles its own copy; nothing here is a crate).
//!
//! One run of a target:
//! 1. replays every file of its corpus (`fuzz/corpus/<target>/`, one input per file);
//! 2. then, until its time budget is spent, checks new inputs: random bytes, inputs the
//!    target's generator builds from random choices (`arbitrary::Unstructured`), and
//!    mutations (bit flips, interesting bytes, truncation, extension, splicing) of corpus
//!    entries and generated inputs.
//!
//! A case that panics is saved as `fuzz/corpus/<target>/crash-<hash>` (commit it with the
//! fix: from then on every run replays it) and fails the test with the seed to repeat the run.
//!
//! `ROUTEMESH_FUZZ_SECS` sets the budget per target in seconds (default 3; 0 replays the corpus
//! only), `ROUTEMESH_FUZZ_SEED` fixes the random seed (default: the clock; printed either way),
//! `ROUTEMESH_FUZZ_LAST=FILE` writes each input to FILE before checking it (to catch the input
//! of a hang or an abort, which no test can catch).

#![allow(dead_code)]

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;

/// Default time budget per target: the whole workspace's fuzz targets stay well under 40 s.
pub const DEFAULT_SECS: f64 = 3.0;

/// Largest random input the driver makes (mutations may grow an input up to twice this).
const MAX_LEN: usize = 1024;

/// A target: a name (its corpus folder), a generator of plausible inputs and the property
/// check, which panics when the property does not hold.
pub struct Target<'a> {
    pub name: &'a str,
    /// `fuzz/corpus` of the workspace.
    pub corpus_root: PathBuf,
    pub generate: &'a dyn Fn(&mut Unstructured) -> arbitrary::Result<Vec<u8>>,
    pub check: &'a dyn Fn(&[u8]),
}

/// `fuzz/corpus` seen from a crate of the workspace (`CARGO_MANIFEST_DIR`).
pub fn corpus_root(manifest_dir: &str) -> PathBuf {
    let mut dir = PathBuf::from(manifest_dir);
    loop {
        let candidate = dir.join("fuzz").join("corpus");
        if candidate.is_dir() {
            return candidate;
        }
        if !dir.pop() {
            return PathBuf::from(manifest_dir).join("fuzz").join("corpus");
        }
    }
}

/// What one run did, for the test to assert on and print.
#[derive(Debug)]
pub struct Report {
    pub replayed: usize,
    pub cases: u64,
    pub seed: u64,
    pub elapsed: Duration,
}

/// Every file directly in `dir` (sub-folders, such as `known-bugs/`, are not replayed), sorted.
pub fn corpus_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect();
    files.sort();
    files
}

fn budget() -> Duration {
    let secs = std::env::var("ROUTEMESH_FUZZ_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("ROUTEMESH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        })
}

/// splitmix64: small, fast, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Byte values that tend to sit on boundaries: lengths, counts, flags.
const INTERESTING: [u8; 10] = [0x00, 0x01, 0x03, 0x04, 0x7f, 0x80, 0xc0, 0xfe, 0xff, 0x3f];

/// One to four random edits of `input`.
pub fn mutate(rng: &mut Rng, input: &[u8], donors: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            3 if !out.is_empty() => {
                let len = rng.below(out.len() + 1);
                out.truncate(len);
            }
            4 if out.len() < 2 * MAX_LEN => {
                let len = 1 + rng.below(32);
                let extra = rng.bytes(len);
                let at = rng.below(out.len() + 1);
                out.splice(at..at, extra);
            }
            5 if !out.is_empty() => {
                // Remove a span.
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                out.drain(start..end);
            }
            6 if !donors.is_empty() && out.len() < 2 * MAX_LEN => {
                // Splice a piece of another input in.
                let donor = donors[rng.below(donors.len())];
                if !donor.is_empty() {
                    let start = rng.below(donor.len());
                    let end = (start + 1 + rng.below(64)).min(donor.len());
                    let at = rng.below(out.len() + 1);
                    out.splice(at..at, donor[start..end].iter().copied());
                }
            }
            7 if out.len() >= 2 => {
                // Duplicate a span (repeated labels, attributes, keys).
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                let piece = out[start..end].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            _ => {
                let len = 1 + rng.below(8);
                let extra = rng.bytes(len);
                out.extend(extra);
            }
        }
    }
    out
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable name for a saved case.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

fn check_one(target: &Target, input: &[u8]) -> Result<(), String> {
    // A hang or an abort (stack overflow, out of memory) cannot be caught: with
    // ROUTEMESH_FUZZ_LAST=FILE every input is written there before it is checked.
    if let Some(path) = std::env::var_os("ROUTEMESH_FUZZ_LAST") {
        let _ = fs::write(path, input);
    }
    panic::catch_unwind(AssertUnwindSafe(|| (target.check)(input))).map_err(|p| panic_message(&*p))
}

/// Saves a failing input so that every later run replays it, and says where.
fn save_crash(dir: &Path, input: &[u8]) -> String {
    let path = dir.join(format!("crash-{:016x}", hash(input)));
    match fs::create_dir_all(dir).and_then(|()| fs::write(&path, input)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e}) {input:02x?}"),
    }
}

/// Replays the corpus, then fuzzes until the budget is spent. Panics (fails the test) on the
/// first input whose check panics.
pub fn run(target: &Target) -> Report {
    let dir = target.corpus_root.join(target.name);
    let corpus = corpus_files(&dir);
    for (path, input) in &corpus {
        if let Err(msg) = check_one(target, input) {
            panic!(
                "fuzz {}: corpus file {} fails: {msg}",
                target.name,
                path.display()
            );
        }
    }
    let seed = seed();
    let budget = budget();
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = corpus.into_iter().map(|(_, bytes)| bytes).collect();
    let keep = pool.len();
    let start = Instant::now();
    let mut cases = 0u64;
    while start.elapsed() < budget {
        let input = match rng.below(8) {
            0 => {
                let len = rng.below(MAX_LEN);
                rng.bytes(len)
            }
            1..=3 => {
                let raw = rng.bytes(MAX_LEN);
                let mut u = Unstructured::new(&raw);
                match (target.generate)(&mut u) {
                    Ok(input) => {
                        // Remember a few generated inputs as mutation bases.
                        if pool.len() < keep + 64 {
                            pool.push(input.clone());
                        } else {
                            let i = keep + rng.below(64);
                            pool[i] = input.clone();
                        }
                        input
                    }
                    Err(_) => continue,
                }
            }
            _ if !pool.is_empty() => {
                let base = pool[rng.below(pool.len())].clone();
                let donors: Vec<&[u8]> = (0..2)
                    .map(|_| pool[rng.below(pool.len())].as_slice())
                    .collect();
                mutate(&mut rng, &base, &donors)
            }
            _ => continue,
        };
        cases += 1;
        if let Err(msg) = check_one(target, &input) {
            let saved = save_crash(&dir, &input);
            panic!(
                "fuzz {}: case {cases} fails: {msg}\n  input saved to {saved}\n  \
                 repeat with ROUTEMESH_FUZZ_SEED={seed}",
                target.name
            );
        }
    }
    let report = Report {
        replayed: keep,
        cases,
        seed,
        elapsed: start.elapsed(),
    };
    eprintln!(
        "fuzz {}: replayed {} corpus files, {} new cases in {:.1?} (ROUTEMESH_FUZZ_SEED={})",
        target.name, report.replayed, report.cases, report.elapsed, report.seed
    );
    report
}

/// Replays the saved inputs of a known, not yet fixed, bug (`fuzz/corpus/<target>/known-bugs/`)
/// and returns the files whose check still fails. Used by `#[ignore]`d tests.
pub fn replay_known_bugs(target: &Target) -> Vec<(PathBuf, String)> {
    let dir = target.corpus_root.join(target.name).join("known-bugs");
    corpus_files(&dir)
        .into_iter()
        .filter_map(|(path, input)| check_one(target, &input).err().map(|m| (path, m)))
        .collect()
}
