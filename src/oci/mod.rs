//! OCI protocol vocabulary, with no I/O: digests, names, references, media
//! types, manifest parsing and the error body.

pub mod digest;
pub mod error;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{ErrorCode, error_body};
pub use media::{Descriptor, Manifest, ManifestContent, ManifestKind, MediaType};
pub use name::{Reference, RepositoryName, Tag, UpstreamName};
