//! Progress of the operator tools (`replay`, `loadgen`): an indicatif bar with rate and
//! ETA when stderr is a terminal, plain periodic lines when it is not (CI logs, `kubectl
//! logs`), so a long run is never silent and a log is never flooded.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// One progress display; cheap to clone and to advance from many tasks.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    what: &'static str,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    /// A display of `what` (e.g. "replayed") out of `total` (0 when unknown).
    pub fn new(what: &'static str, total: u64) -> Self {
        Self::with_terminal(what, total, std::io::stderr().is_terminal())
    }

    fn with_terminal(what: &'static str, total: u64, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} ETA {eta}",
                )
                .expect("valid template"),
            );
            bar.set_message(what);
            bar
        });
        Progress {
            inner: Arc::new(Inner {
                what,
                bar,
                done: AtomicU64::new(0),
                total: AtomicU64::new(total),
                started: Instant::now(),
                last_line: std::sync::Mutex::new(Instant::now()),
            }),
        }
    }

    /// Counts `n` more done.
    pub fn inc(&self, n: u64) {
        let done = self.inner.done.fetch_add(n, Relaxed) + n;
        match &self.inner.bar {
            Some(bar) => bar.inc(n),
            None => self.maybe_line(done),
        }
    }

    /// Corrects the total once it is known better.
    pub fn set_total(&self, total: u64) {
        self.inner.total.store(total, Relaxed);
        if let Some(bar) = &self.inner.bar {
            bar.set_length(total);
        }
    }

    pub fn done(&self) -> u64 {
        self.inner.done.load(Relaxed)
    }

    /// Ends the display (the bar is cleared; the summary follows it).
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }

    fn maybe_line(&self, done: u64) {
        let mut last = self.inner.last_line.lock().expect("progress lock");
        if last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        eprintln!("{}", self.line(done));
    }

    /// The plain progress line: `replayed 1200/5000 (24%), 600/s`.
    fn line(&self, done: u64) -> String {
        let total = self.inner.total.load(Relaxed);
        let secs = self.inner.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        if total > 0 {
            format!(
                "{} {done}/{total} ({:.0}%), {rate:.0}/s",
                self.inner.what,
                done as f64 * 100.0 / total as f64
            )
        } else {
            format!("{} {done}, {rate:.0}/s", self.inner.what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_count_share_and_rate() {
        let p = Progress::with_terminal("replayed", 200, false);
        p.inc(50);
        let line = p.line(p.done());
        assert!(line.starts_with("replayed 50/200 (25%), "), "{line}");
        assert!(line.ends_with("/s"), "{line}");
        let unknown = Progress::with_terminal("sent", 0, false);
        assert!(unknown.line(3).starts_with("sent 3, "));
    }
}
