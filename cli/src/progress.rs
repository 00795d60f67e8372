//! The progress line of `copy` and `retry`, drawn from the engine's own counters
//! ([`trailcopy::ProgressTracker`]): a spinner while the copy is planned, then the bytes and files
//! done of totals fixed when planning ends, a rate over the last seconds, and an ETA once this
//! run has read something. One line that fits the terminal (segments are dropped, least useful
//! first, rather than wrap). Only on a terminal: indicatif's stderr target draws nothing when
//! stderr is a pipe or a file (CI), and `--json` hides it altogether.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use trailcopy::{FetchBudget, Progress, ProgressTracker, RunOptions};

use crate::output::print_err;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);
/// The rate is taken over this much of the recent past, so the ETA follows the copy.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Characters of the bar at most (with its brackets and a space).
const BAR_WIDTH: usize = 24;
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The progress line of a running copy; [`finish`](Self::finish) clears it.
pub struct Display {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Display {
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Run options for a local copy: Ctrl-C stops at the next file (`resume` says how to go on),
/// and a progress line unless `json`.
pub fn run_options(concurrency: usize, budget: FetchBudget, json: bool, resume: String) -> (RunOptions, Display) {
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                print_err(&format!("\nstopping at the next file; resume with `{resume}`\n"));
                cancel.store(true, Ordering::Relaxed);
            }
        });
    }
    let bar =
        if json { ProgressBar::hidden() } else { ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()) };
    bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    let progress: Arc<ProgressTracker> = Arc::default();
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            let mut view = View::new(Instant::now());
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                if bar.is_hidden() {
                    continue;
                }
                let width = console::Term::stderr().size_checked().map_or(80, |(_, w)| usize::from(w));
                bar.set_message(view.line(&progress.snapshot(), Instant::now(), width));
            }
        })
    };
    (RunOptions { concurrency, budget, cancel, progress, ..RunOptions::default() }, Display { bar, ticker })
}

/// What the line remembers between draws: when it began, and recent samples for the rate.
struct View {
    began: Instant,
    ticks: usize,
    /// (when, bytes done, events copied), the last [`RATE_WINDOW`] of them.
    samples: VecDeque<(Instant, u64, u64)>,
    /// Bytes done when copying began (a retry starts from its earlier runs).
    bytes_before: Option<u64>,
    bar_width: Option<usize>,
}

impl View {
    fn new(began: Instant) -> View {
        View { began, ticks: 0, samples: VecDeque::new(), bytes_before: None, bar_width: None }
    }

    /// The line for `p` at `now`, at most `width - 1` characters (a line as wide as the
    /// terminal wraps on some terminals).
    fn line(&mut self, p: &Progress, now: Instant, width: usize) -> String {
        self.ticks += 1;
        let spinner = SPINNER[self.ticks % SPINNER.len()];
        let max = width.saturating_sub(1).max(20);
        let elapsed = clock(now.duration_since(self.began).as_secs());
        if !p.planned {
            return fit(&[format!("{spinner} planning: listing day folders"), elapsed], max);
        }
        let before = *self.bytes_before.get_or_insert(p.done.bytes);
        self.samples.push_back((now, p.done.bytes, p.events_copied));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|s| now.duration_since(s.0) > RATE_WINDOW) {
            self.samples.pop_front();
        }
        let t = &p.total;
        let d = &p.done;
        if t.files == 0 {
            return fit(&[format!("{spinner} nothing to read"), elapsed], max);
        }
        let share = if t.bytes > 0 { d.bytes as f64 / t.bytes as f64 } else { d.files as f64 / t.files as f64 };
        let percent = format!("{:>3}%", (share * 100.0).floor() as u64);
        let mut rate = String::new();
        let mut eta = String::new();
        let mut events = String::new();
        // No rate and no ETA until this run has read something.
        if let (Some(first), Some(last)) = (self.samples.front(), self.samples.back())
            && d.bytes > before
        {
            let seconds = last.0.duration_since(first.0).as_secs_f64();
            if seconds >= 0.5 {
                let bytes_per_second = last.1.saturating_sub(first.1) as f64 / seconds;
                let events_per_second = last.2.saturating_sub(first.2) as f64 / seconds;
                rate = format!("{}/s", amount(bytes_per_second as u64));
                events = format!("{} events/s", HumanCount(events_per_second as u64));
                if bytes_per_second > 0.0 {
                    eta = format!("ETA {}", clock((t.bytes.saturating_sub(d.bytes) as f64 / bytes_per_second) as u64));
                }
            }
        }
        let head = format!("{spinner} {percent} {}", pair(d.bytes, t.bytes));
        let files =
            format!("{}/{} {}", HumanCount(d.files), HumanCount(t.files), if t.files == 1 { "file" } else { "files" });
        let prefixes = format!("{}/{} prefixes", HumanCount(d.prefixes), HumanCount(t.prefixes));
        // Most useful first: what is left out when the terminal is narrow comes last.
        let needed = fit(&[head.clone(), files.clone(), eta.clone(), rate.clone()], max);
        // The bar (between the spinner and the numbers) before the extras, if there is room.
        let room = max.saturating_sub(needed.chars().count() + 1);
        // Its width only shrinks (a longer ETA), so the bar does not jitter.
        let bar_width = if room >= 12 { room.min(*self.bar_width.get_or_insert(room.min(BAR_WIDTH))) } else { 0 };
        self.bar_width = Some(bar_width.max(12));
        let text = fit(&[head, files, eta, rate, elapsed, events, prefixes], max - bar_width.min(max));
        if bar_width == 0 {
            return text;
        }
        let inner = bar_width - 3;
        let filled = ((share * inner as f64).round() as usize).min(inner);
        let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(inner - filled));
        let (spin, rest) = text.split_at(spinner.len_utf8());
        format!("{spin} {bar}{rest}")
    }
}

/// The segments that fit in `max` characters, joined by ` · `; the first always.
fn fit(segments: &[String], max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for s in segments.iter().filter(|s| !s.is_empty()) {
        let n = s.chars().count();
        if out.is_empty() {
            out.push_str(s);
            used = n;
        } else if used + 3 + n <= max {
            out.push_str(" · ");
            out.push_str(s);
            used += 3 + n;
        }
    }
    out
}

/// The decimal unit `bytes` is shown in (`999.5` and up rounds to the next): (divisor, name).
fn unit_of(bytes: f64) -> (f64, &'static str) {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut scale = 1.0;
    let mut unit = 0;
    while bytes / scale >= 999.5 && unit + 1 < UNITS.len() {
        scale *= 1000.0;
        unit += 1;
    }
    (scale, UNITS[unit])
}

/// `326 kB`, `1.6 MB`: a byte count to two or three digits.
fn amount(bytes: u64) -> String {
    let (scale, unit) = unit_of(bytes as f64);
    let x = bytes as f64 / scale;
    if scale == 1.0 || x >= 10.0 { format!("{x:.0} {unit}") } else { format!("{x:.1} {unit}") }
}

/// `2.7/6.5 MB`: done and total in the total's unit.
fn pair(done: u64, total: u64) -> String {
    let (scale, unit) = unit_of(total as f64);
    let (d, t) = (done as f64 / scale, total as f64 / scale);
    if scale == 1.0 || t >= 100.0 { format!("{d:.0}/{t:.0} {unit}") } else { format!("{d:.1}/{t:.1} {unit}") }
}

/// `45s`, `3m05s`, `1h02m`, `2d03h`.
fn clock(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailcopy::Amounts;

    fn progress(done: (u64, u64), total: (u64, u64)) -> Progress {
        Progress {
            planned: true,
            total: Amounts { prefixes: 4, files: total.0, bytes: total.1 },
            done: Amounts { prefixes: 1, files: done.0, bytes: done.1 },
            events_copied: done.0 * 30,
        }
    }

    #[test]
    fn no_rate_or_eta_until_this_run_has_read_something() {
        let t0 = Instant::now();
        let mut v = View::new(t0);
        let total = (48, 6_520_000);
        for i in 0..10 {
            let line = v.line(&progress((0, 0), total), t0 + Duration::from_secs(i), 80);
            assert!(!line.contains("ETA") && !line.contains("/s"), "{line}");
            assert!(line.contains("  0% 0.0/6.5 MB") && line.contains("0/48 files"), "{line}");
        }
        let line = v.line(&progress((12, 1_630_000), total), t0 + Duration::from_secs(11), 80);
        assert!(line.contains(" 25% 1.6/6.5 MB") && line.contains("ETA") && line.contains("326 kB/s"), "{line}");
    }

    #[test]
    fn a_retry_counts_its_own_rate_from_what_earlier_runs_did() {
        let t0 = Instant::now();
        let mut v = View::new(t0);
        let total = (48, 6_520_000);
        let line = v.line(&progress((24, 3_260_000), total), t0, 80);
        assert!(line.contains(" 50% 3.3/6.5 MB") && !line.contains("ETA"), "{line}");
        let line = v.line(&progress((24, 3_260_000), total), t0 + Duration::from_secs(3), 80);
        assert!(!line.contains("ETA"), "nothing read in this run yet: {line}");
        let line = v.line(&progress((36, 4_890_000), total), t0 + Duration::from_secs(4), 80);
        // 1.63 MB in 4 s: ETA 4 s for the 1.63 MB left.
        assert!(line.contains("ETA 4s"), "{line}");
    }

    #[test]
    fn the_eta_follows_recent_seconds() {
        let t0 = Instant::now();
        let mut v = View::new(t0);
        let total = (1000, 100_000_000);
        let mut etas = Vec::new();
        for i in 1..=20u64 {
            // Fast for 10 s, then slow: the ETA grows once the window holds only slow seconds.
            let bytes = if i <= 10 { i * 4_000_000 } else { 40_000_000 + (i - 10) * 1_000_000 };
            let line = v.line(&progress((bytes / 100_000, bytes), total), t0 + Duration::from_secs(i), 100);
            etas.push(line.split("ETA ").nth(1).map(|s| s.split(' ').next().unwrap_or("").to_string()));
        }
        assert_eq!(etas[9].as_deref(), Some("15s"), "{etas:?}");
        assert_eq!(etas[19].as_deref(), Some("50s"), "{etas:?}");
    }

    #[test]
    fn one_line_that_fits_the_terminal() {
        let t0 = Instant::now();
        for width in [40, 60, 80, 120, 200] {
            let mut v = View::new(t0);
            let big = (12_345_678, 987_654_321_000);
            v.line(&progress((0, 0), big), t0, width);
            for (i, done) in [(1, 1_234_567_000), (2, 555_555_555_555), (3, 987_654_321_000)] {
                let p = progress((12_345_678 * i / 3, done), big);
                let line = v.line(&p, t0 + Duration::from_secs(i * 1000), width);
                assert!(line.chars().count() < width.max(21), "{width}: {line:?} ({})", line.chars().count());
                assert!(!line.contains('\n'), "{line}");
                if width >= 80 {
                    assert!(line.contains("files") && line.contains("ETA"), "{width}: {line}");
                }
            }
        }
        let mut v = View::new(t0);
        let planning = Progress::default();
        assert!(v.line(&planning, t0, 80).contains("planning"));
    }

    #[test]
    fn nothing_to_read_is_not_a_full_bar() {
        let mut v = View::new(Instant::now());
        let line = v.line(&progress((0, 0), (0, 0)), Instant::now(), 80);
        assert!(line.contains("nothing to read") && !line.contains("100%") && !line.contains('#'), "{line}");
    }

    #[test]
    fn the_bar_fills_with_the_share_done() {
        let t0 = Instant::now();
        let mut v = View::new(t0);
        let line = v.line(&progress((48, 6_520_000), (48, 6_520_000)), t0, 80);
        assert!(line.contains("100%") && !line.contains('-'), "{line}");
        let mut v = View::new(t0);
        let line = v.line(&progress((0, 0), (48, 6_520_000)), t0, 80);
        assert!(line.contains("[-") && !line.contains('#'), "{line}");
    }

    #[test]
    fn units() {
        assert_eq!(pair(1_630_000, 6_520_000), "1.6/6.5 MB");
        assert_eq!(pair(123_000_000_000, 456_700_000_000), "123/457 GB");
        assert_eq!(pair(12, 999), "12/999 B");
        assert_eq!(
            (amount(326_000), amount(1_630_000), amount(999), amount(12_300_000)),
            ("326 kB".into(), "1.6 MB".into(), "999 B".into(), "12 MB".into())
        );
        assert_eq!(
            (clock(45), clock(185), clock(3720), clock(183_600)),
            ("45s".into(), "3m05s".into(), "1h02m".into(), "2d03h".into())
        );
    }
}
