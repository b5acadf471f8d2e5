//! Two forward passes at a time.
//!
//! One forward pass does not keep two cores busy: between its parallel products come serial
//! parts (norms, attention, sampling, the hand-offs of each product to the thread pool) during
//! which the second core waits. Every workload that runs the model over many independent
//! batches (probe collection, generation, teacher-forced scoring, perplexity and KL windows)
//! therefore runs them two at a time, so that one batch's products fill the other's serial
//! gaps. Measured on the default model, 2 cores, quiet (docs/performance.md): collection of
//! 400 texts 37.2 → 25.3 s, generation of 252 RTP prompts 26.9 → 16.9 s.
//!
//! Results do not change: a batch's arithmetic is the same whichever thread runs it (the
//! kernels and the GEMM split their work by output rows, never along a sum), so the same
//! inputs give the same bits as one batch at a time. Two batches, not more, so that memory
//! stays at two batches' activations.

use anyhow::Result;

/// Batches in flight at once.
pub const IN_FLIGHT: usize = 2;

/// Runs `run` on every job, [`IN_FLIGHT`] at a time, and hands each result to `take` in the
/// jobs' order. Stops at the first error (in job order); jobs after it are not started.
pub fn two_at_a_time<J, R>(
    jobs: &[J],
    run: impl Fn(&J) -> Result<R> + Sync,
    mut take: impl FnMut(&J, R) -> Result<()>,
) -> Result<()>
where
    J: Sync,
    R: Send,
{
    for group in jobs.chunks(IN_FLIGHT) {
        match group {
            [a, b] => {
                let (x, y) = rayon::join(|| run(a), || run(b));
                take(a, x?)?;
                take(b, y?)?;
            }
            _ => {
                for j in group {
                    take(j, run(j)?)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_come_in_job_order_and_the_first_error_stops_the_rest() {
        let jobs: Vec<usize> = (0..7).collect();
        let mut seen = Vec::new();
        two_at_a_time(
            &jobs,
            |&j| Ok(j * 10),
            |&j, r| {
                seen.push((j, r));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..7).map(|j| (j, j * 10)).collect::<Vec<_>>());

        // Job 3 fails: 0..=3 run (3's partner 2 too), 4 and later never start.
        let started = AtomicUsize::new(0);
        let mut taken = Vec::new();
        let err = two_at_a_time(
            &jobs,
            |&j| {
                started.fetch_add(1, Ordering::SeqCst);
                anyhow::ensure!(j != 3, "job {j} failed");
                Ok(j)
            },
            |&j, _| {
                taken.push(j);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "job 3 failed");
        assert_eq!(started.load(Ordering::SeqCst), 4);
        assert_eq!(taken, vec![0, 1, 2]);
        assert!(two_at_a_time(&[] as &[usize], |_| Ok(()), |_, _| Ok(())).is_ok());
    }
}
