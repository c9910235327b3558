//! The kernels' parallel loops: the calling thread takes part, and helper threads join while it
//! works.
//!
//! A kernel call lasts from tens of microseconds to a few milliseconds. Handing it to rayon's
//! global pool from a thread outside the pool (the usual caller: a training loop) puts the
//! caller to sleep and wakes two workers, once per call: on a busy machine that costs as much
//! as the work. Here the caller publishes the loop, wakes the helpers only if they sleep, and
//! starts claiming indices itself. The indices are cut into one contiguous range per
//! participant, each with its own counter: a participant claims its own range first, then
//! what is left of the others' (see [`Job`]), so the same thread handles the same part of the
//! data call after call, and a helper that starts late finds its range partly done. The caller
//! never waits for a helper that has not started, only for indices a helper has claimed. An
//! idle helper keeps looking for the next loop for [`SPIN`], then sleeps.
//!
//! The number of participants is rayon's `current_num_threads()` (the global pool's size, or
//! that of the pool a caller runs in): `--threads`, `RAYON_NUM_THREADS` and
//! `ThreadPool::install` keep their meaning. What runs where never changes what is computed:
//! every index is run exactly once, by whichever thread claims it.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper looks for the next loop before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

/// `state`: the low 32 bits count the helpers inside the current loop; [`OPEN`] is set while
/// helpers may join it; the bits above hold the loop's number (its epoch).
const OPEN: u64 = 1 << 32;
const JOINED: u64 = OPEN - 1;
const EPOCH_SHIFT: u32 = 33;

/// One loop: `f(i)` for every `i < count`. The indices are cut into one contiguous range per
/// participant (the caller first, then the helpers in their order), each with its own counter:
/// a participant claims the indices of its own range first, then those left in the others'
/// ranges, so every index is claimed once whoever arrives late. The same thread gets the same
/// part of the data call after call, which keeps that part in the caches near it (the README's
/// benchmark section has what that gained).
struct Job<'a> {
    ranges: Vec<Claim>,
    /// Helpers allowed in (those numbered below it).
    helpers: usize,
    f: &'a (dyn Fn(usize) + Sync),
    panicked: AtomicBool,
}

/// The next index to claim in a range and its end, on a cache line of its own.
#[repr(align(64))]
struct Claim {
    next: AtomicUsize,
    end: usize,
}

impl Job<'_> {
    fn new(count: usize, participants: usize, f: &(dyn Fn(usize) + Sync)) -> Job<'_> {
        let ranges = (0..participants)
            .map(|p| Claim {
                next: AtomicUsize::new(count * p / participants),
                end: count * (p + 1) / participants,
            })
            .collect();
        Job {
            ranges,
            helpers: participants - 1,
            f,
            panicked: AtomicBool::new(false),
        }
    }

    /// The work of participant `p` (0: the caller; helper `h`: `h + 1`): its own range, then
    /// what is left of the others'.
    fn work(&self, p: usize) {
        let n = self.ranges.len();
        for q in (0..n).map(|k| (p + k) % n) {
            let range = &self.ranges[q];
            loop {
                let i = range.next.fetch_add(1, Ordering::Relaxed);
                if i >= range.end {
                    break;
                }
                (self.f)(i);
            }
        }
    }
}

struct Helper {
    thread: Thread,
    sleeping: Arc<AtomicBool>,
}

struct Pool {
    state: AtomicU64,
    /// The open loop's [`Job`] (valid while [`OPEN`] is set or a helper is inside).
    job: AtomicPtr<()>,
    /// Held by the thread whose loop is published; a second caller runs its loop alone.
    owner: Mutex<()>,
    helpers: Mutex<Vec<Helper>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: AtomicU64::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        owner: Mutex::new(()),
        helpers: Mutex::new(Vec::new()),
    })
}

/// A helper thread's life: join each new loop, work, leave; spin a while, then sleep.
fn helper(pool: &'static Pool, number: usize, sleeping: Arc<AtomicBool>) {
    let mut seen = u64::MAX;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let s = pool.state.load(Ordering::Acquire);
            if s & OPEN != 0 && s >> EPOCH_SHIFT != seen {
                if pool
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    seen = s >> EPOCH_SHIFT;
                    // SAFETY: the loop was open when this helper joined it, and its owner does
                    // not return (nor free the job) before every helper inside has left.
                    let job = unsafe { &*pool.job.load(Ordering::Acquire).cast::<Job<'_>>() };
                    if number < job.helpers
                        && catch_unwind(AssertUnwindSafe(|| job.work(number + 1))).is_err()
                    {
                        job.panicked.store(true, Ordering::Relaxed);
                    }
                    pool.state.fetch_sub(1, Ordering::Release);
                    since = Instant::now();
                    spins = 0;
                }
                continue;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && since.elapsed() > SPIN {
                break;
            }
        }
        sleeping.store(true, Ordering::SeqCst);
        let s = pool.state.load(Ordering::SeqCst);
        if !(s & OPEN != 0 && s >> EPOCH_SHIFT != seen) {
            // Woken by `unpark` (or spuriously): either way, look again.
            thread::park();
        }
        sleeping.store(false, Ordering::SeqCst);
    }
}

impl Pool {
    /// Starts helpers until there are `count`, and wakes the first `count` of them that sleep.
    fn wake(&'static self, count: usize) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        while helpers.len() < count {
            let number = helpers.len();
            let sleeping = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&sleeping);
            let spawned = thread::Builder::new()
                .name(format!("weightnorm-{number}"))
                .spawn(move || helper(self, number, flag));
            match spawned {
                Ok(handle) => helpers.push(Helper {
                    thread: handle.thread().clone(),
                    sleeping,
                }),
                // No thread: the caller does the work alone.
                Err(_) => break,
            }
        }
        for h in helpers.iter().take(count) {
            if h.sleeping.swap(false, Ordering::SeqCst) {
                h.thread.unpark();
            }
        }
    }
}

/// Closes the published loop and waits for the helpers inside it to leave, also when the
/// caller's own share panics (the job lives on the caller's stack).
struct Close(&'static Pool);

impl Drop for Close {
    fn drop(&mut self) {
        self.0.state.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.0.state.load(Ordering::Acquire) & JOINED != 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }
}

/// Calls `f(i)` for every `i < count`, each exactly once: on the calling thread alone when not
/// `parallel` (or with one thread, or one index), else on it and up to
/// `rayon::current_num_threads() - 1` helpers. Returns when every call has returned.
///
/// # Panics
///
/// If a call panics (on a helper: once every other call has returned).
pub(super) fn for_each_index(parallel: bool, count: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = if parallel {
        rayon::current_num_threads().min(count)
    } else {
        1
    };
    if threads <= 1 {
        (0..count).for_each(f);
        return;
    }
    let pool = pool();
    let _owner = match pool.owner.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        // Another loop is running (another caller, or a call from inside a loop): alone.
        Err(TryLockError::WouldBlock) => {
            (0..count).for_each(f);
            return;
        }
    };
    let job = Job::new(count, threads, f);
    // No helper is inside a loop now (the last owner waited for them), so none reads `job`
    // until the loop opens.
    pool.job
        .store((&raw const job).cast_mut().cast(), Ordering::Relaxed);
    let epoch = (pool.state.load(Ordering::Relaxed) >> EPOCH_SHIFT).wrapping_add(1)
        & (u64::MAX >> EPOCH_SHIFT);
    pool.state
        .store(epoch << EPOCH_SHIFT | OPEN, Ordering::SeqCst);
    let close = Close(pool);
    pool.wake(threads - 1);
    job.work(0);
    drop(close);
    assert!(
        !job.panicked.load(Ordering::Relaxed),
        "weight norm: a kernel panicked on a helper thread"
    );
}

/// A slice whose disjoint parts are written by different threads.
pub(super) struct Parts<T>(*mut T, usize);

// SAFETY: `Parts` only hands out disjoint parts (its users' contract), each to one thread.
unsafe impl<T: Send> Sync for Parts<T> {}

impl<T> Parts<T> {
    pub(super) fn new(s: &mut [T]) -> Self {
        Self(s.as_mut_ptr(), s.len())
    }

    /// The part `r`.
    ///
    /// # Safety
    ///
    /// No other live reference may overlap `r`.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn part(&self, r: Range<usize>) -> &mut [T] {
        assert!(r.start <= r.end && r.end <= self.1);
        // SAFETY: within the slice (checked), and exclusive by the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r.start), r.len()) }
    }
}

/// The range of chunk `c` of `chunk` elements in `len`.
fn chunk_range(c: usize, chunk: usize, len: usize) -> Range<usize> {
    c * chunk..((c + 1) * chunk).min(len)
}

/// `f(c, part_c)` for each chunk `c` of `chunk` elements of `out` (the last may be shorter), as
/// [`for_each_index`] runs its calls; `reverse` hands out the last chunk first.
pub(super) fn for_each_chunk_mut<X: Send>(
    parallel: bool,
    out: &mut [X],
    chunk: usize,
    reverse: bool,
    f: impl Fn(usize, &mut [X]) + Sync,
) {
    assert!(chunk > 0);
    let len = out.len();
    let count = len.div_ceil(chunk);
    let parts = Parts::new(out);
    for_each_index(parallel, count, &|i| {
        let c = if reverse { count - 1 - i } else { i };
        // SAFETY: chunks are disjoint, and each index (so each chunk) is run once.
        f(c, unsafe { parts.part(chunk_range(c, chunk, len)) })
    });
}

/// `[f(0), .., f(count - 1)]`, the calls run as [`for_each_index`] runs them.
pub(super) fn map_indices<R: Send>(
    parallel: bool,
    count: usize,
    f: impl Fn(usize) -> R + Sync,
) -> Vec<R> {
    let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
    for_each_chunk_mut(parallel, &mut results, 1, false, |i, r| r[0] = Some(f(i)));
    results
        .into_iter()
        .map(|r| r.expect("every index was run"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_index_runs_once_whoever_runs_it() {
        for parallel in [false, true] {
            for count in [0, 1, 2, 3, 17, 1000] {
                let hits: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                for_each_index(parallel, count, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                let squares = map_indices(parallel, count, |i| i * i);
                assert_eq!(squares, (0..count).map(|i| i * i).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_participant_takes_its_own_range_first_then_what_the_others_left() {
        use std::sync::Mutex;
        for (count, participants) in [(10, 2), (7, 3), (2, 4), (0, 2)] {
            let order = Mutex::new(Vec::new());
            let f = |i: usize| order.lock().unwrap().push(i);
            let job = Job::new(count, participants, &f);
            // The last participant alone (the others never came): its own range, in order,
            // then every other range from the next one on, wrapping around.
            job.work(participants - 1);
            let own = count * (participants - 1) / participants;
            let expected: Vec<usize> = (own..count).chain(0..own).collect();
            assert_eq!(
                *order.lock().unwrap(),
                expected,
                "{count} over {participants}"
            );
            // Nothing is left for a late participant.
            job.work(0);
            assert_eq!(order.lock().unwrap().len(), count);
        }
    }

    #[test]
    fn ranges_are_contiguous_and_cover_the_indices_once() {
        for (count, participants) in [(10, 2), (7, 3), (2, 4), (1000, 7)] {
            let job = Job::new(count, participants, &|_| {});
            let mut at = 0;
            for r in &job.ranges {
                assert_eq!(r.next.load(Ordering::Relaxed), at);
                assert!(r.end >= at);
                at = r.end;
            }
            assert_eq!(at, count);
            assert_eq!(job.helpers, participants - 1);
        }
    }

    #[test]
    fn chunks_partition_the_slice_in_either_order() {
        for reverse in [false, true] {
            let mut v = vec![0usize; 1003];
            for_each_chunk_mut(true, &mut v, 10, reverse, |c, part| {
                assert!(part.len() == 10 || (c == 100 && part.len() == 3));
                part.iter_mut().for_each(|x| *x += c + 1);
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i / 10 + 1));
        }
    }

    #[test]
    fn loops_from_many_threads_and_nested_loops_complete() {
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for k in 0..200 {
                        let sum = AtomicUsize::new(0);
                        for_each_index(true, 8 + (k + t) % 5, &|i| {
                            // A loop inside a loop runs on its caller.
                            let inner = map_indices(true, 3, |j| j + i);
                            sum.fetch_add(inner.iter().sum::<usize>(), Ordering::Relaxed);
                        });
                        let n = 8 + (k + t) % 5;
                        let expected: usize = (0..n).map(|i| 3 * i + 3).sum();
                        assert_eq!(sum.load(Ordering::Relaxed), expected);
                    }
                });
            }
        });
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panicking_call_panics_the_caller() {
        // With one thread the caller runs everything; with more, the panic may happen on either.
        let result = catch_unwind(|| {
            for_each_index(true, 64, &|i| {
                if i == 40 {
                    panic!("boom");
                }
            });
        });
        let payload = result.expect_err("the loop panicked");
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if text.contains("helper thread") {
            panic!("boom (on a helper thread)");
        }
        std::panic::resume_unwind(payload);
    }
}
