//! A TCP relay on loopback that paces what the server sends back to
//! `rate` bytes per second, and can stop sending altogether (a store that
//! stalls mid-body, which a real one does not do on demand).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Throttle {
    pub port: u16,
    /// Bytes the relay may still send back (all connections together).
    allowance: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

const CHUNK: usize = 64 << 10;

impl Throttle {
    /// Relays to `127.0.0.1:target`, sending back at most `rate` bytes/s.
    pub async fn start(target: u16, rate: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowance = Arc::new(AtomicU64::new(u64::MAX));
        let left = Arc::clone(&allowance);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let left = Arc::clone(&left);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                        let _ = to_server.shutdown().await;
                    });
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        let n = match from_server.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let granted = left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                                Some(l.saturating_sub(n as u64))
                            })
                            .unwrap_or(0);
                        let n = n.min(usize::try_from(granted).unwrap_or(usize::MAX));
                        if n == 0 {
                            // Stalled: the connection stays open, silent.
                            std::future::pending::<()>().await;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                    }
                    up.abort();
                });
            }
        });
        Throttle {
            port,
            allowance,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on sends back only `bytes` more, then nothing (connections
    /// stay open).
    pub fn stall_after(&self, bytes: u64) {
        self.allowance.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
