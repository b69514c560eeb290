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
    /// What `Settings` says about requests at the edge: normalization,
    /// trusted forwarding hops, limits.
    pub edge: crate::request::Edge,
    /// Where this snapshot came from, for `/config_dump`.
    pub provenance: Provenance,
    /// Certificates of the HTTPS listeners, and `httpsRedirect` hosts.
    pub tls: crate::tls::Tables,
}

/// Where a snapshot came from: filled in by `compile` (files, hash,
/// documents) and by whoever puts it in force (generation, time, pending).
#[derive(Debug, Default, Clone)]
pub struct Provenance {
    /// 1 at start, +1 per successful reload.
    pub generation: u64,
    /// RFC 3339.
    pub loaded_at: String,
    pub files: Vec<String>,
    pub sha256: String,
    /// Changes only a restart applies.
    pub pending_restart: Vec<String>,
    /// The documents as read, as JSON, unredacted (redact before showing).
    pub documents: Vec<(String, serde_json::Value)>,
}

impl Snapshot {
    /// Listening addresses, sorted.
    pub fn listener_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.listeners.keys().cloned().collect();
        addrs.sort();
        addrs
    }
}
