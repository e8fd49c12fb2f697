//! Caches: the disk content store with its size budget, and reading stored
//! or still-filling content as a stream.

pub mod reader;
pub mod store;

pub use reader::{Progress, RangeReader, ReadError};
pub use store::{CommitError, ContentStore, Kind, Writer};
