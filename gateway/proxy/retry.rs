//! A request's attempts at its upstream: how many were made, where, until
//! when, and whether the one that just failed is made again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use prometheus::IntCounter;

use super::{Rejection, RequestCtx, OVERFLOW, UPSTREAM_TIMEOUT};
use crate::routing::{Failure, RetryPolicy};
use crate::upstream::{Admission, Limits, Outcome as Ended, Refused};

/// What a retry of the route needs to know before its attempt, copied out
/// of the route's policy.
#[derive(Clone, Copy)]
pub(super) struct Backoff {
    /// The retry goes to an endpoint not tried yet (`retryIgnorePreviousHosts`).
    pub other_hosts: bool,
    /// The ceiling of this retry's jittered wait.
    pub ceiling: Duration,
}

/// The retry state of one request.
#[derive(Default)]
pub(super) struct RetryState {
    /// Attempts made at the upstream so far (a retry is one more).
    tries: u32,
    /// Endpoints already tried; filled only when a retry happens.
    tried: Vec<SocketAddr>,
    /// When the route's `timeout` runs out (from the first attempt).
    deadline: Option<Instant>,
    /// The last attempt failed on a pooled connection the upstream had
    /// closed: pingora tries again on a new one, which is not a retry.
    stale: bool,
    /// The request's place within its cluster's `connectionPool` limits,
    /// held to its end.
    admission: Option<Admission>,
}

impl RetryState {
    /// Attempts made so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Endpoints a retry avoids.
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// Starts the route's `timeout` on the first attempt.
    pub fn start_clock(&mut self, timeout: Option<Duration>) {
        if self.tries == 0 {
            self.deadline = timeout.map(|t| Instant::now() + t);
        }
    }

    /// Takes the request's place within the cluster's `connectionPool`
    /// limits, once: retries keep it.
    pub async fn admit(&mut self, limits: Option<&Arc<Limits>>) -> Result<()> {
        if let (Some(limits), None) = (limits, &self.admission) {
            self.admission = Some(limits.admit(self.deadline).await.map_err(|refused| {
                Error::new(ErrorType::Custom(match refused {
                    Refused::Overflow => OVERFLOW,
                    Refused::Timeout => UPSTREAM_TIMEOUT,
                }))
            })?);
        }
        Ok(())
    }

    /// Counts the attempt about to be made. A retry (not the same attempt
    /// again on a fresh connection) is counted in `retries`, remembers the
    /// endpoint it leaves when it should avoid it, and waits Envoy's
    /// jittered backoff first, no longer than the time left.
    pub async fn next_attempt(
        &mut self,
        backoff: Option<Backoff>,
        hashed: bool,
        last: Option<SocketAddr>,
        retries: &IntCounter,
    ) {
        if self.stale {
            // The same attempt again, on a fresh connection.
            self.stale = false;
            return;
        }
        if let (Some(backoff), true) = (backoff, self.tries > 0) {
            retries.inc();
            // With a consistent hash, a retry stays on the hash's
            // endpoint: Istio's retry policy for a hashed destination
            // has no previous-hosts predicate.
            if backoff.other_hosts && !hashed {
                self.tried.extend(last);
            }
            let mut wait = jitter(backoff.ceiling);
            if let Some(deadline) = self.deadline {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            tokio::time::sleep(wait).await;
        }
        self.tries += 1;
    }

    /// What is left of the route's `timeout`, if it has one; an error when
    /// nothing is.
    pub fn remaining(&self) -> Result<Option<Duration>> {
        let remaining = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            return Err(Error::new(ErrorType::Custom(UPSTREAM_TIMEOUT)));
        }
        Ok(remaining)
    }

    /// Whether the route's `timeout` has not run out.
    pub fn time_left(&self) -> bool {
        self.deadline.is_none_or(|d| Instant::now() < d)
    }

    /// The last attempt failed on a stale pooled connection: the next one
    /// is the same attempt again.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Whether `policy` retries an attempt that failed with `failure`:
    /// retries left, time left, nothing sent to the client yet, and the
    /// request body still whole in the retry buffer.
    fn allows(&self, policy: &RetryPolicy, session: &Session, failure: Option<Failure>) -> bool {
        self.tries <= policy.retries
            && self.time_left()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated()
            && failure.is_none_or(|f| policy.retries_failure(f))
    }

    /// Takes a place among the cluster's retries in flight (`maxRetries`);
    /// `false`: the failed attempt stands.
    fn take_budget(&mut self) -> bool {
        self.admission.as_mut().is_none_or(|a| a.retry())
    }

    /// The answer of the last attempt is passed on: its retry, if it was
    /// one, is no longer in flight.
    pub fn answer_kept(&mut self) {
        if let Some(admission) = self.admission.as_mut() {
            admission.retry_done();
        }
    }
}

impl RequestCtx {
    /// Whether the attempt that just failed with `failure` (`None`: its
    /// answer's status is retried) is made again, as the route's retry
    /// policy and the cluster's retry budget allow. If so, this attempt is
    /// over: outlier detection counts it now as `outcome`, and `logging`
    /// counts only the last one.
    pub(super) fn retry_after(
        &mut self,
        session: &Session,
        failure: Option<Failure>,
        outcome: Ended,
    ) -> bool {
        let allowed = self
            .forward()
            .and_then(|f| f.retry.as_ref())
            .is_some_and(|policy| self.retry.allows(policy, session, failure));
        let retry = allowed && self.retry.take_budget();
        if retry {
            let cluster = self.cluster.and_then(|i| self.snap.clusters.get(i));
            if let (Some(cluster), Some(addr)) = (cluster, self.upstream) {
                cluster.report(addr, outcome);
            }
        }
        retry
    }
}

/// How a failed attempt counts for `retryOn`; `None` when the failure was
/// not the upstream's (the client left, an internal error).
pub(super) fn failure_of(e: &Error) -> Option<Failure> {
    if e.esource() != &pingora::ErrorSource::Upstream {
        return None;
    }
    Some(match Rejection::from_proxy_error(e) {
        Some(Rejection::ConnectFailure | Rejection::UpstreamTls(_)) => Failure::Connect,
        Some(Rejection::UpstreamTimeout) => Failure::PerTryTimeout,
        _ => Failure::Reset,
    })
}

/// A random time below `ceiling` (the jitter of Envoy's backoff).
fn jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(crate::random::below(nanos))
}
