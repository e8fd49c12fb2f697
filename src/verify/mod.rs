//! The decision point. Only this module can build a [`VerifiedManifest`], and
//! the server can only serve a manifest as a `VerifiedManifest`, so nothing
//! reaches a client without passing [`Gate::decide`].
//!
//! - [`gate`]: the [`Gate`], which applies policies, relaxations and
//!   exceptions to judged evidence
//! - [`verdict`]: what it says: [`VerifiedManifest`] or [`Denial`], with a
//!   [`Reason`] and the [`Finding`]s behind it
//! - `judge`: which required authorities signed, which required
//!   attestations hold
//! - `signer`: one authority's material matched against one signature or
//!   attestation, for [`check`] (signatures) and [`attest`] (attestations)
//! - [`sigstore`], [`x509`], [`legacy`]: bundles, vendor certificates,
//!   cosign's legacy layers
//! - [`evidence`], [`artifact`]: what `pull` found; proving a signature
//!   artifact is one

pub mod artifact;
pub mod attest;
pub mod check;
pub mod evidence;
pub mod gate;
mod judge;
pub mod legacy;
mod signer;
pub mod sigstore;
pub mod verdict;
pub mod x509;

pub use gate::{Gate, Needs, Reached};
pub use verdict::{AttestationFinding, Denial, Finding, Reason, VerifiedManifest};

#[cfg(test)]
mod tests;
