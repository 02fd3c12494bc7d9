//! The shutdown signal, and what happens to tasks that end badly.
//!
//! The first SIGTERM or SIGINT cancels one token that every task watches, so each stops
//! at a safe point (the consumer stops fetching, in-flight messages finish, bounded by
//! `--shutdown-timeout`). A second signal means the operator will not wait: the process
//! exits at once with 130; unacked messages are redelivered by JetStream, so nothing is
//! lost, only redone.
//!
//! A panic anywhere is logged through `tracing` (with where it happened) by the hook
//! [`log_panics`] installs, and a task that ended in a panic is reported by
//! [`log_task_end`], never silently dropped.

use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal (128 + SIGINT, what shells report for Ctrl-C).
pub const FORCED_EXIT: i32 = 130;

/// Cancels `token` on the first SIGTERM or SIGINT; exits the process on the second.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        // One set of listeners for both signals: none can slip between the two waits.
        let mut signals = Signals::new();
        let name = signals.next().await;
        tracing::info!(
            signal = name,
            "shutting down (a second signal exits at once)"
        );
        token.cancel();
        let name = signals.next().await;
        tracing::warn!(
            signal = name,
            "second signal: exiting now; unacked messages will be redelivered"
        );
        std::process::exit(FORCED_EXIT);
    });
}

/// SIGTERM and SIGINT, listened to for the life of the process.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).expect("installing the SIGTERM handler"),
                int: signal(SignalKind::interrupt()).expect("installing the SIGINT handler"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "interrupt"
        }
    }
}

/// Routes panic messages through `tracing` (JSON logs included), keeping the default
/// hook's output too.
pub fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%message, %location, "panic");
        default(info);
    }));
}

/// Reports how a task ended: a panic is logged as an error (the hook has already logged
/// its message and location), a cancellation at debug level. Returns whether it panicked.
pub fn log_task_end(task: &str, result: Result<(), JoinError>) -> bool {
    match result {
        Ok(()) => false,
        Err(e) if e.is_panic() => {
            tracing::error!(task, "task panicked");
            true
        }
        Err(_) => {
            tracing::debug!(task, "task cancelled");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_task_is_reported_and_a_cancelled_one_is_not() {
        let panicked = tokio::spawn(async { panic!("boom") }).await;
        assert!(log_task_end("t", panicked));
        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        assert!(!log_task_end("t", cancelled.await));
        assert!(!log_task_end("t", tokio::spawn(async {}).await));
    }
}
