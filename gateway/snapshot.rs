//! The compiled, immutable view of the configuration that one request reads.
//! A request loads one `Arc<Snapshot>` in `new_ctx` and keeps it to the end,
//! so a reload in the middle of a request is invisible to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::authz::Authorizer;
use crate::jwt::Authenticator;
use crate::routing::HostTable;
use crate::upstream::Cluster;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Route tables by listening address (`0.0.0.0:80`).
    pub listeners: HashMap<String, HostTable>,
    pub clusters: Vec<Arc<Cluster>>,
    /// Every JWT rule that applies to the gateway.
    pub authn: Authenticator,
    /// Every AuthorizationPolicy that applies to the gateway.
    pub authz: Authorizer,
    /// `Settings.trustedProxies`: X-Forwarded-For hops trusted for `remote.ip`.
    pub trusted_proxies: usize,
}

impl Snapshot {
    /// Listening addresses, sorted.
    pub fn listener_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.listeners.keys().cloned().collect();
        addrs.sort();
        addrs
    }
}
