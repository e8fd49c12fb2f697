//! Reading a byte range of a file as a stream of chunks, optionally while
//! another task is still writing it (a blob being filled from upstream).
//!
//! Reads are positional (`read_at`) on a shared descriptor, so any number of
//! readers follow one writer without sharing an offset, and a reader keeps
//! its data even after the file is renamed or evicted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::watch;

/// How far a fill has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The upstream has not answered yet.
    Pending,
    /// The upstream has answered; `size` is its declared length, if any.
    Started { size: Option<u64>, written: u64 },
    /// All bytes are written and the digest matched.
    Done { size: u64 },
    /// The fill failed; readers must abort.
    Failed(String),
}

/// What all readers' chunks may hold together: each reader's chunk size is
/// this shared out among the readers open now, within [`MIN_CHUNK`,
/// `MAX_CHUNK`]. A few downloads get large reads (fewer system calls and
/// task hand-offs per byte); a thousand slow clients pin little memory.
pub const READ_BUDGET: usize = 64 << 20;
pub const MIN_CHUNK: usize = 64 << 10;
pub const MAX_CHUNK: usize = 1 << 20;

/// What chunks read for clients may hold in all, across the process, until
/// the connection has written them (or dropped them: a stalled stream's
/// chunks are freed when its send timeout resets it). A reader waits for
/// room before it reads more, so stalled clients cannot pin more than this.
/// Twice [`READ_BUDGET`]: a stream holds about two chunks (one queued to
/// send, one being read).
pub const READ_LIMIT: usize = 2 * READ_BUDGET;

/// Readers open now, across the process.
static OPEN_READERS: AtomicUsize = AtomicUsize::new(0);

/// Room left under [`READ_LIMIT`].
static READ_ROOM: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READ_LIMIT);

/// Bytes of chunks held now (read and not yet written or dropped).
pub fn held_bytes() -> usize {
    READ_LIMIT.saturating_sub(READ_ROOM.available_permits())
}

/// A chunk's bytes and the room they take under [`READ_LIMIT`]; the room is
/// given back when the last handle on the chunk is dropped.
struct Held {
    bytes: Vec<u8>,
    _room: tokio::sync::SemaphorePermit<'static>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The chunk size for one read while `open` readers share the budget.
pub fn chunk_size(open: usize) -> usize {
    (READ_BUDGET / open.max(1)).clamp(MIN_CHUNK, MAX_CHUNK)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("upstream transfer failed: {0}")]
    Fill(String),
    #[error("reading cached content failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads `[offset, end)` of `file` (to the end of the content when `end` is
/// `None`), waiting on `progress` for bytes not yet written.
pub struct RangeReader {
    file: Arc<File>,
    offset: u64,
    end: Option<u64>,
    progress: Option<watch::Receiver<Progress>>,
}

impl RangeReader {
    pub fn new(
        file: Arc<File>,
        offset: u64,
        end: Option<u64>,
        progress: Option<watch::Receiver<Progress>>,
    ) -> Self {
        OPEN_READERS.fetch_add(1, Ordering::Relaxed);
        RangeReader {
            file,
            offset,
            end,
            progress,
        }
    }

    /// How many bytes may be read now, waiting if none are available yet.
    /// `Ok(None)` means the range is complete.
    async fn available(&mut self) -> Result<Option<u64>, ReadError> {
        let Some(rx) = self.progress.as_mut() else {
            return Ok(self
                .end
                .map(|e| e.saturating_sub(self.offset))
                .filter(|&n| n > 0));
        };
        loop {
            let state = rx.borrow_and_update().clone();
            let limit = match state {
                Progress::Failed(reason) => return Err(ReadError::Fill(reason)),
                Progress::Done { size } => {
                    let end = self.end.map_or(size, |e| e.min(size));
                    return Ok(Some(end.saturating_sub(self.offset)).filter(|&n| n > 0));
                }
                Progress::Started { size, written } => match self.end {
                    // A whole body streams as it is written, but with a
                    // declared size the client would see a clean end after
                    // the last byte: that byte waits until the digest has
                    // been verified (Done), so a mismatch aborts.
                    None => match size {
                        Some(s) if written >= s => s.saturating_sub(1),
                        _ => written,
                    },
                    // A range ends before the blob does, so any byte of it
                    // could complete a response: nothing of a range is
                    // released before the whole blob is verified.
                    Some(_) => 0,
                },
                Progress::Pending => 0,
            };
            if self.end.is_some_and(|e| self.offset >= e) {
                return Ok(None);
            }
            if limit > self.offset {
                return Ok(Some(limit - self.offset));
            }
            if rx.changed().await.is_err() {
                return Err(ReadError::Fill("fill stopped without finishing".into()));
            }
        }
    }

    /// The next chunk, or `None` at the end of the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ReadError> {
        let Some(available) = self.available().await? else {
            return Ok(None);
        };
        let chunk = chunk_size(OPEN_READERS.load(Ordering::Relaxed));
        let want = usize::try_from(available).unwrap_or(chunk).min(chunk);
        let room = READ_ROOM
            .acquire_many(u32::try_from(want).unwrap_or(u32::MAX))
            .await
            .map_err(std::io::Error::other)?;
        let file = Arc::clone(&self.file);
        let offset = self.offset;
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut buf = vec![0; want];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        let chunk = Bytes::from_owner(Held { bytes, _room: room });
        if chunk.is_empty() {
            return Err(ReadError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "cached file is shorter than expected",
            )));
        }
        self.offset += chunk.len() as u64;
        Ok(Some(chunk))
    }

    /// This reader as a stream of chunks.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, ReadError>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), reader)),
                Ok(None) => None,
                Err(e) => {
                    reader.end = Some(reader.offset);
                    reader.progress = None;
                    Some((Err(e), reader))
                }
            }
        })
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        OPEN_READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    #[test]
    fn chunks_shrink_as_readers_share_the_budget() {
        assert_eq!(chunk_size(0), MAX_CHUNK);
        assert_eq!(chunk_size(1), MAX_CHUNK);
        assert_eq!(chunk_size(128), 512 << 10);
        assert_eq!(chunk_size(2000), MIN_CHUNK);
        for n in 1..5000 {
            let c = chunk_size(n);
            assert!(c * n <= READ_BUDGET || c == MIN_CHUNK, "{n} readers");
        }
    }

    #[tokio::test]
    async fn a_chunk_holds_its_room_under_the_read_limit_until_dropped() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; MAX_CHUNK]).unwrap();
        let mut reader = RangeReader::new(Arc::new(f), 0, Some(MAX_CHUNK as u64), None);
        let chunk = reader.next_chunk().await.unwrap().unwrap();
        assert!(!chunk.is_empty());
        // Other tests read too, so only a lower bound is certain.
        assert!(held_bytes() >= chunk.len(), "the chunk's bytes are counted");
        assert!(held_bytes() <= READ_LIMIT);
    }

    #[tokio::test]
    async fn reads_a_range_of_a_complete_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&(0..=255u8).cycle().take(300_000).collect::<Vec<_>>())
            .unwrap();
        let reader = RangeReader::new(Arc::new(f), 10, Some(200_010), None);
        let chunks: Vec<_> = reader.into_stream().collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(bytes.len(), 200_000);
        assert_eq!(bytes[0], 10);
    }

    #[tokio::test]
    async fn follows_a_writer_and_aborts_when_it_fails() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: None,
            written: 0,
        });
        let mut reader = RangeReader::new(read, 0, None, Some(rx));
        let mut w = file.as_file();
        w.write_all(b"hello").unwrap();
        tx.send(Progress::Started {
            size: None,
            written: 5,
        })
        .unwrap();
        assert_eq!(
            reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
        tx.send(Progress::Failed("reset".into())).unwrap();
        assert!(matches!(reader.next_chunk().await, Err(ReadError::Fill(_))));
    }

    #[tokio::test]
    async fn the_last_byte_waits_for_the_digest_check() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: Some(3),
            written: 0,
        });
        let mut reader = RangeReader::new(read, 0, None, Some(rx));
        file.as_file().write_all(b"abc").unwrap();
        tx.send(Progress::Started {
            size: Some(3),
            written: 3,
        })
        .unwrap();
        assert_eq!(
            reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        tx.send(Progress::Failed("digest mismatch".into())).unwrap();
        assert!(matches!(reader.next_chunk().await, Err(ReadError::Fill(_))));
    }

    #[tokio::test]
    async fn a_whole_read_streams_what_is_written_and_waits_for_the_rest() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: Some(6),
            written: 0,
        });
        let mut reader = RangeReader::new(read, 0, None, Some(rx));
        file.as_file().write_all(b"abc").unwrap();
        tx.send(Progress::Started {
            size: Some(6),
            written: 3,
        })
        .unwrap();
        assert_eq!(
            reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_chunk()).await;
        assert!(more.is_err(), "it waits for bytes not yet written");
    }

    #[tokio::test]
    async fn the_last_byte_is_held_even_when_the_reader_is_part_way_through() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: Some(4),
            written: 0,
        });
        let mut reader = RangeReader::new(read, 0, None, Some(rx));
        file.as_file().write_all(b"ab").unwrap();
        tx.send(Progress::Started {
            size: Some(4),
            written: 2,
        })
        .unwrap();
        assert_eq!(
            reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"ab")
        );
        file.as_file().write_all(b"cd").unwrap();
        tx.send(Progress::Started {
            size: Some(4),
            written: 4,
        })
        .unwrap();
        assert_eq!(
            reader.next_chunk().await.unwrap().unwrap(),
            Bytes::from_static(b"c"),
            "the last byte waits for the digest"
        );
    }

    #[tokio::test]
    async fn a_range_of_a_filling_blob_waits_for_the_digest_check() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: Some(6),
            written: 0,
        });
        let mut reader = RangeReader::new(read, 0, Some(2), Some(rx));
        file.as_file().write_all(b"abcdef").unwrap();
        tx.send(Progress::Started {
            size: Some(6),
            written: 6,
        })
        .unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_chunk()).await;
        assert!(
            early.is_err(),
            "no byte of the range before the digest matched"
        );
        tx.send(Progress::Failed("digest mismatch".into())).unwrap();
        assert!(matches!(reader.next_chunk().await, Err(ReadError::Fill(_))));
    }

    #[tokio::test]
    async fn finishes_when_the_writer_is_done() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let read = Arc::new(file.reopen().unwrap());
        let (tx, rx) = watch::channel(Progress::Started {
            size: Some(3),
            written: 0,
        });
        let reader = RangeReader::new(read, 0, None, Some(rx));
        let handle = tokio::spawn(reader.into_stream().collect::<Vec<_>>());
        file.as_file().write_all(b"abc").unwrap();
        tx.send(Progress::Done { size: 3 }).unwrap();
        let got = handle.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), &Bytes::from_static(b"abc"));
    }
}
