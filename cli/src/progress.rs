//! The progress bar of `copy` and `retry`, drawn from the engine's own counters
//! ([`trailcopy::Progress`]): prefixes and files done of their totals (which grow as prefixes
//! are listed), bytes and events per second, and an ETA once the totals are final. Only on a
//! terminal: indicatif's stderr target draws nothing when stderr is a pipe or a file (CI), and
//! `--json` hides it altogether.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use trailcopy::finalize::count;
use trailcopy::{FetchBudget, Progress, RunOptions};

use crate::output::print_err;

const PLANNING: &str = "{spinner} [{elapsed_precise}] {msg}";
const COPYING: &str = "{spinner} [{elapsed_precise}] {bar:24} {decimal_bytes}/{decimal_total_bytes} \
                       {decimal_bytes_per_sec} · {msg}";
const COPYING_ETA: &str = "{spinner} [{elapsed_precise}] {bar:24} {decimal_bytes}/{decimal_total_bytes} \
                           {decimal_bytes_per_sec} · {msg} · ETA {eta}";

/// Run options for a local copy: Ctrl-C stops at the next file (`resume` says how to go on),
/// and a progress bar unless `json`.
pub fn run_options(concurrency: usize, budget: FetchBudget, json: bool, resume: String) -> (RunOptions, ProgressBar) {
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
        if json { ProgressBar::hidden() } else { ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()) };
    bar.set_style(style(PLANNING));
    bar.set_message("planning: listing day folders");
    bar.enable_steady_tick(Duration::from_millis(200));
    let view = Arc::new(Mutex::new(View::default()));
    let progress = {
        let bar = bar.clone();
        Arc::new(move |p: &Progress| view.lock().unwrap_or_else(|e| e.into_inner()).show(&bar, p))
    };
    (RunOptions { concurrency, budget, cancel, progress, ..RunOptions::default() }, bar)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[derive(Default)]
struct View {
    /// When copying began, and the events done then (a retry starts from its earlier runs).
    copying: Option<(Instant, u64)>,
    eta: bool,
}

impl View {
    fn show(&mut self, bar: &ProgressBar, p: &Progress) {
        if !p.planned {
            bar.set_message("planning: listing day folders");
            return;
        }
        let s = &p.statistics;
        let (since, events_before) = *self.copying.get_or_insert_with(|| {
            bar.set_style(style(COPYING));
            bar.set_position(s.bytes_read);
            bar.reset_eta();
            (Instant::now(), s.events_completed)
        });
        if p.totals_final() && !self.eta {
            self.eta = true;
            bar.set_style(style(COPYING_ETA));
        }
        bar.set_length(s.bytes_to_read.max(s.bytes_read));
        bar.set_position(s.bytes_read);
        let seconds = since.elapsed().as_secs_f64().max(0.001);
        let events_per_second = (s.events_completed.saturating_sub(events_before)) as f64 / seconds;
        let (files_done, files) = p.files();
        bar.set_message(format!(
            "{}/{} · {}/{} {} · {} events/s",
            s.prefixes_completed,
            count(s.prefixes_found, "prefix", "prefixes"),
            HumanCount(files_done),
            HumanCount(files),
            if files == 1 { "file" } else { "files" },
            HumanCount(events_per_second as u64)
        ));
    }
}
