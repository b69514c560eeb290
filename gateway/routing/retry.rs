//! `retries` (Istio's `HTTPRetry`, as Istio translates it into Envoy's
//! retry policy) and what each `retryOn` condition covers, as Envoy's
//! router decides it.

use std::time::Duration;

use http::HeaderMap;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection to the endpoint could not be made.
    Connect,
    /// The endpoint closed or reset the connection, or sent something that
    /// is not HTTP, before its response header.
    Reset,
    /// The attempt's time ran out (`perTryTimeout`) before the response header.
    PerTryTimeout,
}

/// `retryOn` conditions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const SERVER_ERROR: RetryOn = RetryOn(1); // 5xx
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 7);
    /// Conditions that cannot arise here (HTTP/2 and HTTP/3 upstream
    /// events, Envoy's retriable headers, which Istio cannot configure):
    /// accepted, as Istio accepts them, and never met.
    pub const NEVER: RetryOn = RetryOn(1 << 8);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 9);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 10);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 12);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 13);

    pub fn has(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    fn with(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// One `retryOn` name, as Envoy's `x-envoy-retry-on` and
    /// `x-envoy-retry-grpc-on` spell it.
    fn named(name: &str) -> Option<RetryOn> {
        Some(match name {
            "5xx" => RetryOn::SERVER_ERROR,
            "gateway-error" => RetryOn::GATEWAY_ERROR,
            "reset" => RetryOn::RESET,
            "reset-before-request" => RetryOn::RESET_BEFORE_REQUEST,
            "connect-failure" => RetryOn::CONNECT_FAILURE,
            "retriable-4xx" => RetryOn::RETRIABLE_4XX,
            "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
            "envoy-ratelimited" => RetryOn::ENVOY_RATELIMITED,
            "refused-stream" | "retriable-headers" | "http3-post-connect-failure" => RetryOn::NEVER,
            "cancelled" => RetryOn::GRPC_CANCELLED,
            "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
            "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            "internal" => RetryOn::GRPC_INTERNAL,
            "unavailable" => RetryOn::GRPC_UNAVAILABLE,
            _ => return None,
        })
    }
}

/// The most retries a route may ask for.
pub const MAX_RETRIES: u32 = 50;

/// Envoy's default base interval between retries.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`attempts`).
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    /// Statuses retried under `retriable-status-codes`.
    pub statuses: Vec<u16>,
    /// A retry goes to an endpoint not tried yet, when there is one
    /// (`retryIgnorePreviousHosts`, on by default).
    pub other_hosts: bool,
    /// The base interval between retries (`backoff`); each wait is a random
    /// time below base × 2^(retry - 1), at most 10 × base, as Envoy's.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Istio's policy for a route without `retries`: 2 retries on
    /// connect-failure, refused-stream, unavailable, cancelled and
    /// retriable-status-codes (503), to another endpoint.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            retries: 2,
            per_try_timeout: None,
            on: RetryOn::CONNECT_FAILURE
                .with(RetryOn::NEVER)
                .with(RetryOn::GRPC_UNAVAILABLE)
                .with(RetryOn::GRPC_CANCELLED)
                .with(RetryOn::RETRIABLE_STATUS_CODES),
            statuses: vec![503],
            other_hosts: true,
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// Reads `retryOn` into the policy (Istio's `parseRetryOn`): names of
    /// conditions and HTTP status codes, comma-separated; a status code
    /// turns `retriable-status-codes` on.
    pub fn set_retry_on(&mut self, retry_on: &str) -> Result<(), String> {
        let mut on = RetryOn::default();
        let mut statuses = Vec::new();
        for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(named) = RetryOn::named(part) {
                on = on.with(named);
            } else {
                match part.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => statuses.push(code),
                    _ => return Err(format!("`{part}` is not a valid retryOn policy")),
                }
            }
        }
        if !statuses.is_empty() {
            on = on.with(RetryOn::RETRIABLE_STATUS_CODES);
        }
        self.on = on;
        self.statuses = statuses;
        Ok(())
    }

    /// Whether a failed attempt is retried under these conditions (Envoy's
    /// `wouldRetryFromReset`: a connect failure or a reset is a 5xx or
    /// gateway error to come).
    pub fn retries_failure(&self, failure: Failure) -> bool {
        let on = self.on;
        if on.has(RetryOn::SERVER_ERROR) || on.has(RetryOn::GATEWAY_ERROR) {
            return true;
        }
        match failure {
            Failure::Connect => {
                on.has(RetryOn::RESET)
                    || on.has(RetryOn::RESET_BEFORE_REQUEST)
                    || on.has(RetryOn::CONNECT_FAILURE)
            }
            Failure::Reset | Failure::PerTryTimeout => on.has(RetryOn::RESET),
        }
    }

    /// Whether a response with `status` and `headers` is retried instead of
    /// passed on.
    pub fn retries_response(&self, status: u16, headers: &HeaderMap) -> bool {
        let on = self.on;
        (on.has(RetryOn::SERVER_ERROR) && (500..=599).contains(&status))
            || (on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.has(RetryOn::RETRIABLE_STATUS_CODES) && self.statuses.contains(&status))
            || (on.has(RetryOn::ENVOY_RATELIMITED) && headers.contains_key("x-envoy-ratelimited"))
            || self.retries_grpc(headers)
    }

    /// gRPC conditions, on a `grpc-status` in the response header (a
    /// trailers-only answer).
    fn retries_grpc(&self, headers: &HeaderMap) -> bool {
        let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u8>().ok())
        else {
            return false;
        };
        let on = self.on;
        match code {
            1 => on.has(RetryOn::GRPC_CANCELLED),
            4 => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
            8 => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
            13 => on.has(RetryOn::GRPC_INTERNAL),
            14 => on.has(RetryOn::GRPC_UNAVAILABLE),
            _ => false,
        }
    }

    /// The longest wait before retry number `retry` (1 for the first).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        (self.backoff * factor).min(self.backoff * 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_on: &str) -> RetryPolicy {
        let mut p = RetryPolicy::istio_default();
        p.set_retry_on(retry_on).unwrap();
        p
    }

    #[test]
    fn istio_default_retries_connect_failures_and_503_only() {
        let p = RetryPolicy::istio_default();
        let none = HeaderMap::new();
        assert!(p.retries_failure(Failure::Connect));
        assert!(!p.retries_failure(Failure::Reset));
        assert!(!p.retries_failure(Failure::PerTryTimeout));
        assert!(p.retries_response(503, &none));
        assert!(!p.retries_response(502, &none));
        assert!(!p.retries_response(500, &none));
    }

    #[test]
    fn server_and_gateway_errors_differ_in_statuses_not_in_failures() {
        let none = HeaderMap::new();
        let five = policy("5xx");
        let gateway = policy("gateway-error");
        for p in [&five, &gateway] {
            assert!(p.retries_failure(Failure::Connect));
            assert!(p.retries_failure(Failure::Reset));
            assert!(p.retries_failure(Failure::PerTryTimeout));
            assert!(p.retries_response(503, &none));
        }
        assert!(five.retries_response(500, &none));
        assert!(!gateway.retries_response(500, &none));
        assert!(!five.retries_response(404, &none));
    }

    #[test]
    fn reset_and_connect_failure_cover_what_they_name() {
        let reset = policy("reset");
        assert!(reset.retries_failure(Failure::Reset));
        assert!(reset.retries_failure(Failure::PerTryTimeout));
        assert!(reset.retries_failure(Failure::Connect));
        assert!(!reset.retries_response(503, &HeaderMap::new()));
        let connect = policy("connect-failure");
        assert!(connect.retries_failure(Failure::Connect));
        assert!(!connect.retries_failure(Failure::Reset));
    }

    #[test]
    fn status_codes_in_retry_on_are_retriable_status_codes() {
        let p = policy("connect-failure, 418,429");
        assert!(p.on.has(RetryOn::RETRIABLE_STATUS_CODES));
        assert_eq!(p.statuses, vec![418, 429]);
        assert!(p.retries_response(429, &HeaderMap::new()));
        assert!(!p.retries_response(503, &HeaderMap::new()));
        let mut bad = RetryPolicy::istio_default();
        assert!(bad.set_retry_on("5xx,sometimes").is_err());
        assert!(bad.set_retry_on("700").is_err());
    }

    #[test]
    fn grpc_conditions_read_grpc_status() {
        let p = policy("unavailable");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retries_response(200, &h));
        h.insert("grpc-status", "13".parse().unwrap());
        assert!(!p.retries_response(200, &h));
    }

    #[test]
    fn backoff_doubles_up_to_ten_times_the_base() {
        let p = RetryPolicy::istio_default();
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(25));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(50));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(5), Duration::from_millis(250));
        assert_eq!(p.backoff_ceiling(40), Duration::from_millis(250));
    }
}
