//! claimgate: a JWT-aware edge gateway on Pingora that speaks Istio's
//! configuration.
//!
//! A request flows: `proxy` (Pingora hooks) -> `request::decide` (the
//! request normalized as it will be forwarded, then `jwt` authentication,
//! `authz` AuthorizationPolicy and `routing` on validated claims) ->
//! `upstream` (pick an endpoint), all reading one immutable
//! `snapshot::Snapshot` built by `compile` from the `config` documents. `jwks` keeps remote key sets fresh in the
//! background; `admin` answers health probes.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod compile;
pub mod config;
pub mod demo;
pub mod explain;
pub mod jwks;
pub mod jwt;
pub mod lifecycle;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod random;
pub mod reload;
pub mod request;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
