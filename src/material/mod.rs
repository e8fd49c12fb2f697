//! Trust material's vocabulary, shared by [`crate::config`] (which names
//! it), [`crate::trust`] (which loads and refreshes it) and
//! [`crate::verify`] (which verifies against it): public keys, certificate
//! identities, vendor CA sets and Sigstore trusted roots. Everything here is
//! parsed and checked for usability where it enters; nothing here decides
//! whether a signature verifies.

pub mod identity;
pub mod key;
pub mod pki;
pub mod root;

pub use identity::{Identity, SubjectMatch};
pub use key::{KeyError, public_key_from_pem, usable_certificate_key, usable_key};
pub use pki::{LeafEku, VendorPki, normalize_serial, serial_of};
pub use root::{RootError, SigstoreRoot};
