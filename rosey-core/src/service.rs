//! One lifecycle for every long-running part of Rosey (router, connectors, control API…).
//!
//! A service is started by a `start(self, …)` that consumes it, so it cannot be started twice, and
//! returns once the service is live. What it returns is (or wraps) a [`ServiceHandle`]:
//! [`stop`](ServiceHandle::stop) asks the service to stop, [`wait`](ServiceHandle::wait) says how it
//! ended, [`shutdown`](ServiceHandle::shutdown) does both. A service's task ends every task it spawned
//! before it ends itself, so once `wait` returns nothing of the service runs any more.
//!
//! ```
//! use rosey_core::service::{ServiceHandle, TaskFailed};
//!
//! #[derive(Debug, thiserror::Error)]
//! enum TickerError {
//!     #[error(transparent)]
//!     Task(#[from] TaskFailed),
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TickerError> {
//! let ticker = ServiceHandle::<TickerError>::spawn("ticker", |stop| async move {
//!     stop.cancelled().await; // the service's work would be selected against this
//!     Ok(())
//! });
//! ticker.shutdown().await // asks it to stop and waits until it has
//! # }
//! ```

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A service's task did not end by itself: it panicked, or the runtime cancelled it.
///
/// The panic is reported as this error, never re-raised in the caller.
#[derive(Debug, thiserror::Error)]
#[error("the {service} task {}", if .source.is_panic() { "panicked" } else { "was cancelled" })]
pub struct TaskFailed {
    service: &'static str,
    #[source]
    source: JoinError,
}

impl TaskFailed {
    /// The name of the service whose task failed (`router`, `console`, `cytube`…).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Whether the task panicked (rather than being cancelled by a runtime shutting down).
    pub fn is_panic(&self) -> bool {
        self.source.is_panic()
    }
}

/// Asks a service to stop; a cheap clone of what [`ServiceHandle::stop`] does, for code that does
/// not own the handle (a signal handler, the other branch of a `select!`).
#[derive(Debug, Clone)]
pub struct Stopper(CancellationToken);

impl Stopper {
    /// Asks the service to stop; returns at once. Asking again does nothing.
    pub fn stop(&self) {
        self.0.cancel();
    }
}

/// A running service: its task and the token that asks it to stop. See the [module docs](self).
///
/// Dropping the handle without [`wait`](Self::wait)ing asks the service to stop (it does not wait for
/// it), so a service never outlives everything that could stop it.
#[derive(Debug)]
#[must_use = "dropping the handle stops the service"]
pub struct ServiceHandle<E> {
    name: &'static str,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), E>>>,
}

impl<E: Send + 'static> ServiceHandle<E> {
    /// Spawns `run` as the service's task on the current tokio runtime. `run` gets the token that
    /// [`stop`](Self::stop) cancels; it should end soon after, with `Ok(())`, and end the tasks it
    /// spawned first. It ends with an error when the service failed for good.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn<F>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(stop.clone()));
        Self { name, stop, task: Some(task) }
    }
}

impl<E> ServiceHandle<E> {
    /// The service's name, as in logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the service to stop; returns at once. [`wait`](Self::wait) tells when it has.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Something that can ask the service to stop while this handle is being waited on.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Whether the service's task has ended (stopped, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl<E: From<TaskFailed>> ServiceHandle<E> {
    /// Waits until the service has ended and says how: `Ok` after a [`stop`](Self::stop), the
    /// service's error when it failed for good, [`TaskFailed`] when its task panicked. Does not ask
    /// it to stop; dropping this future before it completes leaves the service running (use a
    /// [`Stopper`] taken beforehand to stop it).
    pub async fn wait(mut self) -> Result<(), E> {
        let name = self.name;
        let Some(task) = self.task.take() else { return Ok(()) };
        match task.await {
            Ok(result) => result,
            Err(source) => Err(TaskFailed { service: name, source }.into()),
        }
    }

    /// Asks the service to stop and waits until it has: [`stop`](Self::stop) then
    /// [`wait`](Self::wait).
    pub async fn shutdown(self) -> Result<(), E> {
        self.stop();
        self.wait().await
    }
}

impl<E> Drop for ServiceHandle<E> {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("gave up")]
        GaveUp,
        #[error(transparent)]
        Task(#[from] TaskFailed),
    }

    #[tokio::test]
    async fn shutdown_stops_the_service_and_reports_a_clean_end() {
        let handle = ServiceHandle::<TestError>::spawn("idle", |stop| async move {
            stop.cancelled().await;
            Ok(())
        });
        assert!(!handle.is_finished());
        assert!(handle.shutdown().await.is_ok());
    }

    #[tokio::test]
    async fn a_service_that_fails_reports_its_error() {
        let handle =
            ServiceHandle::<TestError>::spawn("failing", |_| async { Err(TestError::GaveUp) });
        assert!(matches!(handle.wait().await, Err(TestError::GaveUp)));
    }

    #[tokio::test]
    async fn a_panicking_service_is_an_error_not_a_panic() {
        let handle = ServiceHandle::<TestError>::spawn("panicky", |_| async {
            if true {
                panic!("boom");
            }
            Ok(())
        });
        match handle.wait().await {
            Err(TestError::Task(failed)) => {
                assert!(failed.is_panic());
                assert_eq!(failed.service(), "panicky");
                assert_eq!(failed.to_string(), "the panicky task panicked");
            }
            other => panic!("expected a task failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stopper_stops_a_service_being_waited_on() {
        let handle = ServiceHandle::<TestError>::spawn("idle", |stop| async move {
            stop.cancelled().await;
            Ok(())
        });
        let stopper = handle.stopper();
        let waiting = tokio::spawn(handle.wait());
        stopper.stop();
        assert!(waiting.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn dropping_the_handle_asks_the_service_to_stop() {
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        let handle = ServiceHandle::<TestError>::spawn("idle", |stop| async move {
            stop.cancelled().await;
            let _ = ended_tx.send(());
            Ok(())
        });
        drop(handle);
        ended.await.unwrap();
    }
}
