//! A team of threads for the single-row products of one token (single-stream generation).
//!
//! One token of the default model is ~200 matrix–vector products of 0.1–28 M weights
//! each, a few microseconds to a millisecond apiece. Handed to rayon, each product woke a
//! sleeping worker through a futex and parked the caller until it was done: on a 2-core
//! Intel Xeon (2026-12-03) two threads generated no faster than one (29–40 against 36–39
//! tok/s) while llama.cpp went from 39 to 66, because its threads spin between the
//! operations of a token instead of sleeping. This team does the same for these products
//! only: `rayon::current_num_threads() − 1` helper threads wait for work by spinning for
//! [`SPIN`], then yielding up to [`IDLE`], then parking, so the products of one token
//! reach a helper that is already awake, and an idle process costs no CPU after a
//! millisecond.
//!
//! The caller publishes a job (a chunk count and a function of the chunk index), takes
//! chunks itself from a shared counter, and returns when every helper that joined has
//! left: each chunk runs exactly once, on whichever thread claimed it. A second caller
//! while the team is busy (two batches in flight, `runtime::overlap`) runs its chunks on
//! its own thread; both cores are busy then anyway.
//!
//! Why not a crate: rayon is the pool everything else uses, and its idle workers sleep
//! after a few rounds with no way to ask for spinning; a second general-purpose pool
//! would bring its own threads and scheduling for a use this narrow.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it starts yielding its core: longer than the
/// gaps between the products of one token (attention, norms, sampling: microseconds).
const SPIN: Duration = Duration::from_micros(100);
/// How long an idle helper yields before it parks (an idle process then costs nothing).
const IDLE: Duration = Duration::from_millis(2);

/// A job's function, its lifetime erased (see the SAFETY note in [`run`]).
type Job = *const (dyn Fn(usize) + Sync + 'static);

/// What the caller and the helpers share.
struct Shared {
    /// Bumped once per job, so a helper joins each job once.
    epoch: AtomicUsize,
    /// Set while the current job takes new helpers.
    open: AtomicBool,
    /// Helpers inside the current job; the caller returns when it falls to 0.
    active: AtomicUsize,
    /// The next chunk to claim, and the job's chunk count.
    next: AtomicUsize,
    chunks: AtomicUsize,
    /// Written by the caller only while no helper can read it (see `run`).
    job: UnsafeCell<Option<Job>>,
    /// A helper's chunk panicked; the caller panics in turn.
    panicked: AtomicBool,
    /// Per helper: parked, or about to park (the caller unparks it).
    asleep: Vec<AtomicBool>,
}

// SAFETY: every field but `job` is atomic. `job` is written by the one caller that holds
// the team's lock, before it opens the job (SeqCst store of `open`) and only when no helper
// is inside a job (`active` was 0 after `open` was cleared); a helper reads it only after
// counting itself in `active` and then seeing `open` set, which orders the read after the
// write and before the next one.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Team {
    /// Held by the caller of a job.
    lock: Mutex<()>,
    shared: Arc<Shared>,
    helpers: Vec<Thread>,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let n = rayon::current_num_threads().saturating_sub(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            chunks: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            asleep: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let helpers = (0..n)
            .filter_map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("scalpel-team-{i}"))
                    .spawn(move || helper(&s, i))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect();
        Team {
            lock: Mutex::new(()),
            shared,
            helpers,
        }
    })
}

/// Threads a job can use: the caller and the helpers (rayon's thread count).
pub fn width() -> usize {
    team().helpers.len() + 1
}

/// Runs `work(c)` once for every `c` in `0..chunks`, on the calling thread and the team's
/// helpers; returns when all have run. A panic in any chunk panics here.
pub fn run(chunks: usize, work: &(dyn Fn(usize) + Sync)) {
    let team = team();
    let guard = match team.lock.try_lock() {
        Ok(g) if chunks > 1 && !team.helpers.is_empty() => g,
        _ => return (0..chunks).for_each(work),
    };
    let s = &*team.shared;
    // SAFETY: the erased lifetime is never outlived: the pointer is reachable by helpers
    // only between `open` being set and `active` returning to 0 after `open` is cleared,
    // and this function does not return (or unwind: nothing below panics before the wait)
    // until then. No helper is inside a job now (the previous call waited), so nothing
    // reads `job` during this write.
    unsafe {
        let job: Job = std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(work);
        *s.job.get() = Some(job);
    }
    s.next.store(0, SeqCst);
    s.chunks.store(chunks, SeqCst);
    s.epoch.fetch_add(1, SeqCst);
    s.open.store(true, SeqCst);
    for (i, t) in team.helpers.iter().enumerate() {
        if s.asleep[i].load(SeqCst) {
            t.unpark();
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(|| claim(s, work)));
    s.open.store(false, SeqCst);
    // A helper mid-chunk finishes in microseconds unless it lost its core (more runnable
    // threads than cores, as in a parallel test run); then yielding lets it back on.
    let mut spins = 0u32;
    while s.active.load(SeqCst) != 0 {
        spins += 1;
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // SAFETY: as above; no helper is inside the job any more.
    unsafe { *s.job.get() = None };
    let theirs = s.panicked.swap(false, SeqCst);
    drop(guard);
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    assert!(!theirs, "a chunk of a team job panicked on a helper thread");
}

/// Runs chunks until none is left to claim.
fn claim(s: &Shared, work: &(dyn Fn(usize) + Sync)) {
    let chunks = s.chunks.load(SeqCst);
    loop {
        let c = s.next.fetch_add(1, SeqCst);
        if c >= chunks {
            return;
        }
        work(c);
    }
}

/// Whether a job is open that the helper which last joined job `seen` has not joined.
fn new_job(s: &Shared, seen: usize) -> bool {
    s.open.load(SeqCst) && s.epoch.load(SeqCst) != seen
}

/// A helper: joins each job once, spins, yields, then parks while there is none.
fn helper(s: &Shared, me: usize) {
    let mut seen = 0usize;
    let mut idle = Instant::now();
    let mut polls = 0u32;
    loop {
        if new_job(s, seen) {
            s.active.fetch_add(1, SeqCst);
            // Counted before looking again: the caller either sees this helper in `active`
            // and waits for it, or cleared `open` first, and then this load sees that.
            if s.open.load(SeqCst) {
                seen = s.epoch.load(SeqCst);
                // SAFETY: see `Shared`: set, and stays valid while this helper is counted.
                let job = unsafe { (*s.job.get()).expect("an open team job has a function") };
                // SAFETY: the caller keeps the function alive until `active` is 0.
                let work = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| claim(s, work))).is_err() {
                    s.panicked.store(true, SeqCst);
                }
            }
            s.active.fetch_sub(1, SeqCst);
            idle = Instant::now();
            polls = 0;
            continue;
        }
        polls += 1;
        if !polls.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let waited = idle.elapsed();
        if waited < SPIN {
            std::hint::spin_loop();
        } else if waited < IDLE {
            std::thread::yield_now();
        } else {
            s.asleep[me].store(true, SeqCst);
            // Looked at after announcing sleep: a caller that opened a job before this
            // store is seen here; one that opens after it sees `asleep` and unparks.
            if !new_job(s, seen) {
                std::thread::park();
            }
            s.asleep[me].store(false, SeqCst);
            idle = Instant::now();
            polls = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every chunk runs exactly once, over many jobs in a row and after helpers fall asleep.
    #[test]
    fn every_chunk_runs_once() {
        for round in 0..2000usize {
            let chunks = round % 37;
            let counts: Vec<AtomicU64> = (0..chunks).map(|_| AtomicU64::new(0)).collect();
            run(chunks, &|c| {
                counts[c].fetch_add(1, SeqCst);
            });
            assert!(counts.iter().all(|n| n.load(SeqCst) == 1), "round {round}");
            if round % 500 == 499 {
                std::thread::sleep(IDLE * 2);
            }
        }
    }

    /// Callers on several threads at once: one gets the team, the others run alone.
    #[test]
    fn concurrent_callers_each_finish_their_own_job() {
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                sc.spawn(move || {
                    for _ in 0..300 {
                        let sum = AtomicU64::new(0);
                        run(50, &|c| {
                            sum.fetch_add(c as u64 * (t + 1), SeqCst);
                        });
                        assert_eq!(sum.load(SeqCst), (0..50).sum::<u64>() * (t + 1));
                    }
                });
            }
        });
    }

    /// A panicking chunk panics in the caller, and the team still works afterwards.
    #[test]
    fn a_panic_reaches_the_caller() {
        let r = catch_unwind(|| run(64, &|c| assert!(c != 40, "chunk 40")));
        assert!(r.is_err());
        let sum = AtomicU64::new(0);
        run(64, &|c| {
            sum.fetch_add(c as u64, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), (0..64).sum::<u64>());
    }
}
