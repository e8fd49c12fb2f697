//! Integration tests against real components on loopback: the CNCF
//! distribution registry as upstream, skopeo and containerd as clients,
//! promtool for the alert rules of the deployment kit.
//! One test binary for all of them, to keep build time down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod support;

mod attestations;
mod auth;
mod availability;
mod bounds;
mod clients;
mod cluster;
mod deploy;
mod faults;
mod governance;
mod integrity;
mod nodes;
mod operability;
mod process;
mod proxy;
mod readiness;
mod resilience;
mod signatures;
mod tls;
mod tuf;
mod vendor_pki;
