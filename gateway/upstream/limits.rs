//! A cluster's circuit breakers (DestinationRule `connectionPool`): how
//! many requests may be at the cluster, wait for a connection, or retry at
//! once. Past a limit the gateway answers 503 at once, as Envoy does,
//! instead of queueing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::Pool;

/// The counters of one cluster.
#[derive(Debug)]
pub struct Limits {
    max_requests: usize,
    max_pending: usize,
    max_retries: usize,
    /// `maxConnections` permits; `None`: unlimited.
    connections: Option<Arc<Semaphore>>,
    requests: AtomicUsize,
    pending: AtomicUsize,
    retries: AtomicUsize,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit is reached: 503, `x-envoy-overloaded`.
    Overflow,
    /// The route's timeout ran out while waiting for a connection.
    Timeout,
}

/// A request's place within its cluster's limits, given back on drop.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    _connection: Option<OwnedSemaphorePermit>,
    /// This request holds one of the `maxRetries` places.
    retrying: bool,
}

impl Limits {
    /// The limits of `pool`; `None` when it sets none.
    pub fn of(pool: &Pool) -> Option<Arc<Limits>> {
        pool.limits().then(|| {
            Arc::new(Limits {
                max_requests: pool.max_requests.unwrap_or(usize::MAX),
                max_pending: pool.max_pending.unwrap_or(usize::MAX),
                max_retries: pool.max_retries.unwrap_or(usize::MAX),
                connections: pool
                    .max_connections
                    .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
                requests: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                retries: AtomicUsize::new(0),
            })
        })
    }

    /// Lets a request in, as Envoy's connection pool does: it takes a
    /// connection, or waits for one (until `deadline`, if any) while fewer
    /// than `max_pending` wait, or is refused; holding its connection it
    /// becomes active, unless `max_requests` are active already (refused).
    /// Waiting requests are not counted in `max_requests`.
    pub async fn admit(self: &Arc<Self>, deadline: Option<Instant>) -> Result<Admission, Refused> {
        let connection = match &self.connections {
            None => None,
            Some(connections) => match connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.wait(connections, deadline).await?),
            },
        };
        if self.requests.fetch_add(1, Ordering::AcqRel) >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Overflow);
        }
        Ok(Admission {
            limits: self.clone(),
            _connection: connection,
            retrying: false,
        })
    }

    /// Waits for a connection as one of at most `max_pending`.
    async fn wait(
        &self,
        connections: &Arc<Semaphore>,
        deadline: Option<Instant>,
    ) -> Result<OwnedSemaphorePermit, Refused> {
        /// One place among the waiting, given back however the wait ends
        /// (even when the waiting future is dropped).
        struct Waiting<'l>(&'l AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Overflow);
        }
        let _waiting = Waiting(&self.pending);
        let wait = connections.clone().acquire_owned();
        let permit = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), wait)
                .await
                .map_err(|_| Refused::Timeout)?,
            None => wait.await,
        };
        // The semaphore is never closed: an error cannot happen, but is
        // an overflow if it did.
        permit.map_err(|_| Refused::Overflow)
    }

    /// Requests waiting for a connection now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl Admission {
    /// Takes one of the cluster's `maxRetries` places for this request's
    /// retries (kept until it ends); `false` when none is free.
    pub fn retry(&mut self) -> bool {
        if self.retrying {
            return true;
        }
        let limits = &self.limits;
        if limits.retries.fetch_add(1, Ordering::AcqRel) >= limits.max_retries {
            limits.retries.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.retrying = true;
        true
    }
}

impl Admission {
    /// The retried attempt got its answer: the `maxRetries` place is given
    /// back, as Envoy does, not held while the answer streams.
    pub fn retry_done(&mut self) {
        if std::mem::take(&mut self.retrying) {
            self.limits.retries.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.requests.fetch_sub(1, Ordering::AcqRel);
        if self.retrying {
            self.limits.retries.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(pool: Pool) -> Arc<Limits> {
        Limits::of(&pool).expect("a limit is set")
    }

    /// A request admitted in a task of its own, once it waits for a
    /// connection.
    async fn waiting(l: &Arc<Limits>) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.admit(None).await.map(|_| ()) })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while l.pending() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the request waits");
        waiter
    }

    #[tokio::test]
    async fn max_requests_refuses_the_one_past_it_and_frees_on_drop() {
        let l = limits(Pool {
            max_requests: Some(2),
            ..Pool::default()
        });
        let a = l.admit(None).await.unwrap();
        let _b = l.admit(None).await.unwrap();
        assert_eq!(l.admit(None).await.unwrap_err(), Refused::Overflow);
        drop(a);
        assert!(l.admit(None).await.is_ok());
    }

    #[tokio::test]
    async fn past_max_connections_requests_wait_up_to_max_pending() {
        let l = limits(Pool {
            max_connections: Some(1),
            max_pending: Some(1),
            ..Pool::default()
        });
        let first = l.admit(None).await.unwrap();
        let waiter = waiting(&l).await;
        assert_eq!(
            l.admit(None).await.unwrap_err(),
            Refused::Overflow,
            "a second waiter is one too many"
        );
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn requests_waiting_for_a_connection_are_not_active_requests() {
        // Envoy: 1 connection, 1 waiting, 1 active request: the second
        // request waits instead of being refused as a second request.
        let l = limits(Pool {
            max_connections: Some(1),
            max_pending: Some(1),
            max_requests: Some(1),
            ..Pool::default()
        });
        let first = l.admit(None).await.unwrap();
        let waiter = waiting(&l).await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_dropped_wait_gives_its_place_back() {
        let l = limits(Pool {
            max_connections: Some(1),
            max_pending: Some(1),
            ..Pool::default()
        });
        let _held = l.admit(None).await.unwrap();
        let wait = l.admit(None);
        assert!(tokio::time::timeout(Duration::from_millis(20), wait)
            .await
            .is_err());
        assert_eq!(l.pending(), 0, "the cancelled waiter left");
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_deadline() {
        let l = limits(Pool {
            max_connections: Some(1),
            ..Pool::default()
        });
        let _held = l.admit(None).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert_eq!(l.admit(Some(deadline)).await.unwrap_err(), Refused::Timeout);
        assert_eq!(l.pending(), 0);
    }

    #[tokio::test]
    async fn retries_are_bounded_across_requests() {
        let l = limits(Pool {
            max_retries: Some(1),
            ..Pool::default()
        });
        let mut a = l.admit(None).await.unwrap();
        let mut b = l.admit(None).await.unwrap();
        assert!(a.retry());
        assert!(a.retry(), "a request keeps its place for later retries");
        assert!(!b.retry());
        a.retry_done();
        assert!(b.retry(), "a's retry got its answer: its place is free");
        assert!(!a.retry());
        drop(b);
        assert!(a.retry());
    }
}
