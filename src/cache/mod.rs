//! Caches: the disk content store with its size budget, the bucket that
//! replicas share, and reading stored or still-filling content as a stream.

pub mod reader;
pub mod shared;
pub mod store;

pub use reader::{Progress, RangeReader, ReadError};
pub use shared::SharedStore;
pub use store::{CommitError, ContentStore, Kind, Writer};
