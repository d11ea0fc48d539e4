//! The limits every shard call shares, as tower layers: the coordinator-wide budget of
//! calls in flight (`--inflight-budget`, a concurrency limit over one semaphore) and the
//! deadline of one call (`--request-timeout-secs`, a timeout). A write on a long-lived
//! write stream takes its place in the same budget ([`ShardCallLimits::place`]).
//!
//! This module only bounds calls; it never retries one or picks where it goes (that is
//! [`crate::targets`] and [`crate::hedging`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::limit::ConcurrencyLimit;
use tower::timeout::Timeout;
use tower::{Service, ServiceExt};

use crate::error::{CoordinatorError, Result};

/// One shard call, not yet started.
type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The innermost service: runs the call it is given.
#[derive(Clone, Copy)]
struct Run;

impl<'a, T> Service<Call<'a, T>> for Run {
    type Response = T;
    type Error = CoordinatorError;
    type Future = Call<'a, T>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<'a, T>) -> Self::Future {
        call
    }
}

/// The shared limits; cheap to clone (every clone draws on the same budget).
#[derive(Clone)]
pub struct ShardCallLimits {
    service: Timeout<ConcurrencyLimit<Run>>,
    /// The budget `service` draws on, for calls driven outside it ([`ShardCallLimits::place`]).
    budget: Arc<Semaphore>,
    deadline: Duration,
}

impl ShardCallLimits {
    /// At most `budget` calls in flight at once, each within `deadline`.
    pub fn new(budget: usize, deadline: Duration) -> ShardCallLimits {
        let budget = Arc::new(Semaphore::new(budget.max(1)));
        let limited = ConcurrencyLimit::with_semaphore(Run, budget.clone());
        ShardCallLimits {
            service: Timeout::new(limited, deadline),
            budget,
            deadline,
        }
    }

    /// The deadline of one call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// A place in the budget for a call the caller drives itself (one write on a long-lived
    /// write stream), held until the permit drops; the caller keeps to [`Self::deadline`].
    /// A place not free within the deadline is OVERLOADED (retryable).
    pub async fn place(&self) -> Result<OwnedSemaphorePermit> {
        tokio::time::timeout(self.deadline, self.budget.clone().acquire_owned())
            .await
            .map_err(|_| {
                CoordinatorError::Overloaded("too many shard calls in flight; retry later".into())
            })?
            .map_err(|e| CoordinatorError::Internal(e.to_string()))
    }

    /// Run `call` holding a place in the budget, within the deadline. A place not free
    /// within the deadline is OVERLOADED (retryable); a call past it is DEADLINE_EXCEEDED.
    pub async fn run<'a, T: 'a>(
        &self,
        call: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Result<T> {
        let mut service = self.service.clone();
        // The concurrency limit takes its permit while the service gets ready.
        let ready = tokio::time::timeout(
            self.deadline,
            ServiceExt::<Call<'a, T>>::ready(&mut service),
        )
        .await
        .map_err(|_| {
            CoordinatorError::Overloaded("too many shard calls in flight; retry later".into())
        })?
        .map_err(|e| self.error(e))?;
        ready.call(Box::pin(call)).await.map_err(|e| self.error(e))
    }

    /// A call's error out of tower's box: the call's own, or the timeout's.
    fn error(&self, e: tower::BoxError) -> CoordinatorError {
        match e.downcast::<CoordinatorError>() {
            Ok(e) => *e,
            Err(e) if e.is::<tower::timeout::error::Elapsed>() => CoordinatorError::Deadline(
                format!("shard call took longer than {:?}", self.deadline),
            ),
            Err(e) => CoordinatorError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_deadline_is_deadline_exceeded() {
        let limits = ShardCallLimits::new(4, Duration::from_secs(1));
        let out = limits
            .run(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert!(matches!(out, Err(CoordinatorError::Deadline(_))), "{out:?}");
    }

    /// A call that never answers, on a clone of `limits`.
    fn hang(limits: &ShardCallLimits) -> tokio::task::JoinHandle<Result<()>> {
        let limits = limits.clone();
        tokio::spawn(async move { limits.run(std::future::pending()).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_waits_past_the_deadline_for_a_place_is_overloaded() {
        // One place: A holds it until its deadline (1 s), B waits for it and gets it then,
        // C is still waiting when its own deadline (1.1 s) passes.
        let limits = ShardCallLimits::new(1, Duration::from_secs(1));
        let a = hang(&limits);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = hang(&limits);
        tokio::task::yield_now().await;
        let c = hang(&limits);
        let (a, b, c) = (a.await, b.await, c.await);
        assert!(matches!(a, Ok(Err(CoordinatorError::Deadline(_)))), "{a:?}");
        assert!(matches!(b, Ok(Err(CoordinatorError::Deadline(_)))), "{b:?}");
        assert!(
            matches!(c, Ok(Err(CoordinatorError::Overloaded(_)))),
            "{c:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_calls_than_the_budget_run_at_once() {
        let limits = ShardCallLimits::new(2, Duration::from_secs(10));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (limits, running, most) = (limits.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    limits
                        .run(async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.expect("join").expect("call");
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_place_counts_against_the_budget_of_calls() {
        let limits = ShardCallLimits::new(1, Duration::from_secs(1));
        let place = limits.place().await.expect("a free place");
        let out = limits.run(async { Ok(()) }).await;
        assert!(
            matches!(out, Err(CoordinatorError::Overloaded(_))),
            "{out:?}"
        );
        drop(place);
        limits
            .run(async { Ok(()) })
            .await
            .expect("the place is free again");
        let _again = limits.place().await.expect("a free place");
    }

    #[tokio::test]
    async fn a_call_error_comes_back_as_it_was() {
        let limits = ShardCallLimits::new(1, Duration::from_secs(1));
        let out: Result<()> = limits
            .run(async { Err(CoordinatorError::Unavailable("node gone".into())) })
            .await;
        assert!(matches!(out, Err(CoordinatorError::Unavailable(m)) if m == "node gone"));
    }
}
