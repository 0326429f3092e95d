//! A future that runs where it is awaited, yet always runs to its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls its future in the caller's task, and hands it to the runtime if the caller drops it
/// before it finished, so a client that hangs up never cuts an invocation (or its environment)
/// in half.
///
/// Why not `tokio::spawn(..).await`: a spawned task is one more hand-off per invocation, each
/// way, and on a multi-threaded runtime the spawn often wakes another worker to run it. At
/// concurrency 1 that hand-off was a visible part of the platform's own latency.
pub struct RunToCompletion<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    type Output = Option<F::Output>;

    /// `None` only if polled again after it finished.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(None);
        };
        match future.as_mut().poll(cx) {
            Poll::Ready(output) => {
                this.future = None;
                Poll::Ready(Some(output))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Future + Send + 'static> Drop for RunToCompletion<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            // Without a runtime (the process is ending) there is nothing left to finish on.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(future);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn finishes_in_place() {
        let out = RunToCompletion::new(async { 7 }).await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test]
    async fn a_dropped_caller_does_not_stop_the_work() {
        let done = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let flag = done.clone();
        let caller = tokio::spawn(RunToCompletion::new(async move {
            let _ = started_tx.send(());
            let _ = finish_rx.await;
            flag.store(true, Ordering::SeqCst);
        }));
        started_rx.await.expect("the work started");
        caller.abort();
        assert!(caller.await.expect_err("aborted").is_cancelled());
        assert!(!done.load(Ordering::SeqCst));
        finish_tx.send(()).expect("the work is still waiting");
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the detached work never finished");
    }
}
