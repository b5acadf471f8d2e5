//! What the user sees while scalpel works, and where the time went.
//!
//! - [`bar`]: a progress bar on a terminal. When stderr is not a terminal (a log file, CI, a
//!   pipe) a bar draws nothing, so the same bar prints a line when it starts, one a minute
//!   while it runs and one when it ends: a log shows which stage a long run is in.
//! - [`stage`]: times one stage of the method (collection, training, edit, generation,
//!   scoring, perplexity, KL) for one subject; [`take_timings`] hands the stages timed so far
//!   to the report (`summary.json`'s `timings`), so a slow run says where its time went.
//!
//! Stage times live in a per-thread list because the stages run deep inside the library
//! (a generation inside an evaluation inside a pipeline step) and only the pipeline reports
//! them: threading a recorder through every signature would couple the runtime to the
//! pipeline for the sake of a table. Per thread, so two runs on two threads of one process
//! (tests, a library user) keep their own lists; every stage starts and ends on the thread
//! that drives the run.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// A step of the method whose wall time the report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Forward passes over the probe's labelled texts (pooled activations).
    Collection,
    /// Fitting the probe.
    Training,
    /// Selecting rows and writing an edited model (and its patch).
    Edit,
    /// Generating continuations of a suite's prompts.
    Generation,
    /// Scoring continuations: NLL under the base model and the behaviour's classifier.
    Scoring,
    /// WikiText-2 perplexity windows.
    Perplexity,
    /// KL divergence from the base model.
    Kl,
}

impl Stage {
    /// Every stage, in the order a run meets them.
    pub const ALL: [Stage; 7] = [
        Stage::Collection,
        Stage::Training,
        Stage::Edit,
        Stage::Generation,
        Stage::Scoring,
        Stage::Perplexity,
        Stage::Kl,
    ];

    /// The name used in logs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Collection => "collection",
            Stage::Training => "training",
            Stage::Edit => "edit",
            Stage::Generation => "generation",
            Stage::Scoring => "scoring",
            Stage::Perplexity => "perplexity",
            Stage::Kl => "kl",
        }
    }
}

/// One timed stage: what ran, on what, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: Stage,
    /// The model (base, edited, a control) or dataset the stage worked on.
    pub subject: String,
    pub secs: f64,
}

thread_local! {
    static TIMINGS: RefCell<Vec<StageTime>> = const { RefCell::new(Vec::new()) };
}

/// Whether progress goes to a person (a terminal) rather than a log.
fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// Times a stage until the guard is dropped; logs its end when stderr is not a terminal.
#[must_use = "the stage is timed until the guard is dropped"]
pub struct StageGuard {
    stage: Stage,
    subject: String,
    t0: Instant,
}

/// Starts timing `stage` on `subject`.
pub fn stage(stage: Stage, subject: impl Into<String>) -> StageGuard {
    StageGuard {
        stage,
        subject: subject.into(),
        t0: Instant::now(),
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        let secs = self.t0.elapsed().as_secs_f64();
        if !interactive() {
            eprintln!(
                "[{}] {} {}: {}",
                clock(),
                self.stage.name(),
                self.subject,
                duration(secs)
            );
        }
        let t = StageTime {
            stage: self.stage,
            subject: std::mem::take(&mut self.subject),
            secs,
        };
        TIMINGS.with(|l| l.borrow_mut().push(t));
    }
}

/// The stages this thread timed since the last call, in the order they ended.
pub fn take_timings() -> Vec<StageTime> {
    TIMINGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// Seconds per stage, summed over subjects, in [`Stage::ALL`] order (stages that did not
/// run are left out).
pub fn totals(times: &[StageTime]) -> Vec<(Stage, f64)> {
    Stage::ALL
        .iter()
        .filter_map(|&s| {
            let mut it = times.iter().filter(|t| t.stage == s).peekable();
            it.peek()?;
            Some((s, it.map(|t| t.secs).sum()))
        })
        .collect()
}

/// A one-line summary of [`totals`]: `collection 3m 02s · generation 1m 10s · …`.
pub fn totals_line(times: &[StageTime]) -> String {
    totals(times)
        .iter()
        .map(|(s, secs)| format!("{} {}", s.name(), duration(*secs)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// How often a bar that is not drawn logs a line.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The template of a bar of steps: label, bar, count, elapsed and remaining time, rate.
pub const STEPS: &str = "{msg:24} {bar:30} {pos}/{len} [{elapsed}<{eta}] {per_sec:.1}";

/// A progress bar of `len` steps labelled `label`, in `template` (an indicatif template;
/// `{msg}` is the label). On a terminal it is drawn; otherwise it logs a line when it
/// starts, every minute, and when it finishes or is dropped.
pub fn bar(len: usize, label: impl Into<String>, template: &str) -> ProgressBar {
    let label = label.into();
    let pb = ProgressBar::new(len as u64);
    pb.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    pb.set_message(label.clone());
    if !interactive() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
        log_while_running(&pb, label);
    }
    pb
}

/// A bar that draws nothing and logs nothing (for callers that asked for no progress).
pub fn hidden(len: usize) -> ProgressBar {
    ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::hidden())
}

/// Logs `pb`'s state once a minute from a background thread until it finishes or is
/// dropped (the thread holds only a weak reference, so it never keeps a bar alive).
fn log_while_running(pb: &ProgressBar, label: String) {
    let len = pb.length().unwrap_or(0);
    eprintln!("[{}] {label}: started ({len} steps)", clock());
    let weak = pb.downgrade();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let mut next = LOG_EVERY;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let Some(pb) = weak.upgrade() else {
                break;
            };
            if pb.is_finished() {
                break;
            }
            if t0.elapsed() >= next {
                next += LOG_EVERY;
                eprintln!(
                    "[{}] {label}: {}/{len} after {}",
                    clock(),
                    pb.position(),
                    duration(t0.elapsed().as_secs_f64())
                );
            }
        }
        eprintln!(
            "[{}] {label}: done in {}",
            clock(),
            duration(t0.elapsed().as_secs_f64())
        );
    });
}

/// Wall-clock time of day (UTC) for log lines.
fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `83.2` → `1m 23s`; under a minute, `4.1s`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = secs.round() as u64;
        if s < 3600 {
            format!("{}m {:02}s", s / 60, s % 60)
        } else {
            format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(duration(4.06), "4.1s");
        assert_eq!(duration(83.2), "1m 23s");
        assert_eq!(duration(3725.0), "1h 02m 05s");
    }

    #[test]
    fn totals_sum_each_stage_over_subjects_in_stage_order() {
        let t = |stage, subject: &str, secs| StageTime {
            stage,
            subject: subject.into(),
            secs,
        };
        let times = [
            t(Stage::Generation, "base rtp", 2.0),
            t(Stage::Collection, "toxicity", 5.0),
            t(Stage::Generation, "edited rtp", 3.0),
        ];
        assert_eq!(
            totals(&times),
            vec![(Stage::Collection, 5.0), (Stage::Generation, 5.0)]
        );
        assert_eq!(totals_line(&times), "collection 5.0s · generation 5.0s");
    }

    #[test]
    fn a_dropped_guard_records_its_stage() {
        drop(stage(Stage::Kl, "edited"));
        let got = take_timings();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].stage, got[0].subject.as_str()),
            (Stage::Kl, "edited")
        );
        assert!(got[0].secs >= 0.0);
        assert!(take_timings().is_empty(), "taken once");
    }
}
