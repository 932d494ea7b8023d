//! TCP listener, request framing and connections (bytes ↔ frames).
//!
//! A Kafka frame is a big-endian i32 size followed by that many bytes. A connection reads a
//! frame, hands it to the [`Handler`] and waits for it before reading the next, so requests take
//! effect in the order they were sent. Answers are written in that order too, by a writer half of
//! the same task. One kind of answer may come later: a produce waiting for its acks=all
//! replication ([`Outcome::Later`]) is queued for the writer and the next request is read
//! meanwhile, up to [`PIPELINE_DEPTH`] unanswered requests. (Kafka mutes a channel until each
//! answer is sent; with librdkafka's default of unlimited in-flight requests and `linger.ms=0`
//! that serialises one replication round trip per record, which held an acks=all producer at
//! 10,000 records/s to hundreds of milliseconds of queueing.)

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// A slice of a file sent with `sendfile` (zero-copy from the page cache).
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

/// One piece of a response on the wire.
#[derive(Debug, Clone)]
pub enum Chunk {
    Bytes(Bytes),
    File(FileSlice),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(f) => f.len as usize,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When a request passed each stage, for the request-latency metrics.
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    /// Kafka API key of the request.
    pub api_key: i16,
    /// The whole frame had been read.
    pub read_at: Instant,
    /// The handler started.
    pub handle_start: Instant,
    /// The handler finished.
    pub handle_end: Instant,
    /// Time the handler spent waiting in a purgatory (long-poll fetch), part of its run time.
    pub remote: Duration,
    /// The response was written.
    pub sent_at: Instant,
}

/// Facts the handler reports about an answered request; `net` adds the send time.
#[derive(Debug, Clone, Copy)]
pub struct Handled {
    pub api_key: i16,
    pub handle_start: Instant,
    pub handle_end: Instant,
    pub remote: Duration,
}

/// What the protocol layer decided for one frame.
pub enum Outcome {
    /// Send these chunks (the 4-byte size prefix is added here).
    Respond(Vec<Chunk>, Option<Handled>),
    /// Nothing to send (Produce with acks=0).
    NoResponse,
    /// Close the connection (Kafka closes on unparseable headers and unknown API keys).
    Close(String),
    /// The answer once this completes (or the reason to close); the connection reads the next
    /// request meanwhile.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'static>>),
}

/// A deferred answer: the chunks to send, or why the connection closes instead.
pub type Answer = Result<(Vec<Chunk>, Option<Handled>), String>;

/// Requests a connection reads ahead of their answers being written.
pub const PIPELINE_DEPTH: usize = 64;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
}

pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        frame: Bytes,
        peer: &Peer,
    ) -> impl std::future::Future<Output = Outcome> + Send;

    /// A connection was accepted (+1) or closed (-1).
    fn connections_changed(&self, _delta: i64) {}
    /// A frame was read (+1) or its answer written or dropped (-1).
    fn in_flight_changed(&self, _delta: i64) {}
    /// An answered request's stage times.
    fn request_done(&self, _timing: RequestTiming) {}
}

pub struct NetConfig {
    /// `socket.request.max.bytes`: larger frames close the connection, as in Kafka.
    pub request_bytes_max: usize,
    /// `max.connections`: accepts wait while this many connections are open.
    pub connections_max: usize,
}

/// Accepts connections until `shutdown` flips to true, then waits for open connections to finish
/// their current request.
pub async fn run<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: NetConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let request_bytes_max = config.request_bytes_max;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let peer = Peer { addr };
            handler.connections_changed(1);
            if let Err(e) =
                serve_connection(stream, &peer, handler.clone(), request_bytes_max, shutdown).await
            {
                tracing::debug!("connection {addr} closed: {e}");
            }
            handler.connections_changed(-1);
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    peer: &Peer,
    handler: Arc<H>,
    request_bytes_max: usize,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE_DEPTH);
    let writer = write_answers(write_half, rx, handler.clone());
    tokio::pin!(writer);
    let read = tokio::select! {
        r = read_requests(read_half, peer, &handler, request_bytes_max, shutdown, tx) => r,
        // The writer ends early only on a write error: the connection is gone.
        w = &mut writer => return w,
    };
    // The reader has stopped (end of stream, shutdown or a reason to close): answers already
    // owed are still written, then the connection closes.
    let written = writer.await;
    read.and(written)
}

/// An answer owed on a connection, in request order.
struct Owed<H: Handler> {
    outcome: Outcome,
    read_at: Instant,
    _in_flight: InFlight<H>,
}

async fn read_requests<H: Handler>(
    read_half: tokio::net::tcp::OwnedReadHalf,
    peer: &Peer,
    handler: &Arc<H>,
    request_bytes_max: usize,
    mut shutdown: watch::Receiver<bool>,
    tx: tokio::sync::mpsc::Sender<Owed<H>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    loop {
        // Wait for room before reading on, so at most PIPELINE_DEPTH answers are owed.
        let permit = tokio::select! {
            p = tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()), // the writer is gone
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let size = tokio::select! {
            r = reader.read_i32() => match r {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        if size < 0 || size as usize > request_bytes_max {
            // Kafka: InvalidReceiveException, the connection is closed.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "frame of {size} bytes exceeds socket.request.max.bytes {request_bytes_max}"
                ),
            ));
        }
        // Read into spare capacity (no zero-fill: that memset cost 7% of the broker's CPU on
        // 1 MB produce frames), bounded by `take` so the next frame stays in the reader.
        let size = size as usize;
        let mut frame = BytesMut::with_capacity(size);
        let mut limited = (&mut reader).take(size as u64);
        while frame.len() < size {
            if limited.read_buf(&mut frame).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let read_at = Instant::now();
        handler.in_flight_changed(1);
        // Decremented when the answer is written or dropped, however that happens.
        let in_flight = InFlight(handler.clone());
        let outcome = handler.handle(frame.freeze(), peer).await;
        if let Outcome::Close(reason) = outcome {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
        }
        permit.send(Owed {
            outcome,
            read_at,
            _in_flight: in_flight,
        });
    }
}

async fn write_answers<H: Handler>(
    mut write_half: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::Receiver<Owed<H>>,
    handler: Arc<H>,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(owed) = rx.recv().await {
        let answer = match owed.outcome {
            Outcome::NoResponse => continue,
            Outcome::Respond(chunks, handled) => Ok((chunks, handled)),
            Outcome::Close(reason) => Err(reason),
            Outcome::Later(later) => later.await,
        };
        match answer {
            Err(reason) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
            }
            Ok((chunks, handled)) => {
                let total: usize = chunks.iter().map(Chunk::len).sum();
                out.clear();
                out.extend_from_slice(&(total as i32).to_be_bytes());
                for chunk in chunks {
                    match chunk {
                        Chunk::Bytes(b) => out.extend_from_slice(&b),
                        Chunk::File(f) => {
                            write_half.write_all(&out).await?;
                            out.clear();
                            send_file(&write_half, &f).await?;
                        }
                    }
                }
                if !out.is_empty() {
                    write_half.write_all(&out).await?;
                }
                if let Some(h) = handled {
                    handler.request_done(RequestTiming {
                        api_key: h.api_key,
                        read_at: owed.read_at,
                        handle_start: h.handle_start,
                        handle_end: h.handle_end,
                        remote: h.remote,
                        sent_at: Instant::now(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Lowers the in-flight gauge when a request's handling ends, however it ends.
struct InFlight<H: Handler>(Arc<H>);

impl<H: Handler> Drop for InFlight<H> {
    fn drop(&mut self) {
        self.0.in_flight_changed(-1);
    }
}

/// Writes a file slice to the socket with `sendfile(2)`: the bytes go from the page cache to the
/// socket without passing through user space.
async fn send_file(
    socket: &tokio::net::tcp::OwnedWriteHalf,
    slice: &FileSlice,
) -> std::io::Result<()> {
    let sock: &TcpStream = socket.as_ref();
    let in_fd = slice.file.as_raw_fd();
    let out_fd = sock.as_raw_fd();
    let mut offset = slice.position as libc::off_t;
    let end = slice.position + slice.len;
    while (offset as u64) < end {
        sock.writable().await?;
        let remaining = (end - offset as u64) as usize;
        let r = sock.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both fds are open for the duration of the call (we hold the Arc<File>
            // and the socket), and `offset` is a valid pointer to an off_t.
            let n = unsafe { libc::sendfile(out_fd, in_fd, &mut offset, remaining) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(0) => {
                // The file is shorter than promised (truncated underneath us): the response
                // would be corrupt, so drop the connection and let the client retry.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shorter than the fetch response promised",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    /// Frames are one byte: `s` is answered later (when `release` fires), anything else at once.
    /// Every answer echoes its frame.
    struct Scripted {
        seen: Mutex<Vec<u8>>,
        release: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    }

    impl Handler for Scripted {
        async fn handle(&self, frame: Bytes, _peer: &Peer) -> Outcome {
            let byte = frame[0];
            self.seen.lock().unwrap().push(byte);
            if byte != b's' {
                return Outcome::Respond(vec![Chunk::Bytes(frame)], None);
            }
            let answer = Ok((vec![Chunk::Bytes(frame)], None));
            let release = self
                .release
                .lock()
                .unwrap()
                .take()
                .expect("one slow request");
            Outcome::Later(Box::pin(async move {
                let _ = release.await;
                answer
            }))
        }
    }

    /// Proves the reader goes on while an answer is owed, and answers keep request order: the
    /// requests after a deferred one are handled before it completes, yet answered after it.
    #[tokio::test]
    async fn deferred_answers_do_not_stall_reading_and_keep_order() {
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        let handler = Arc::new(Scripted {
            seen: Mutex::new(Vec::new()),
            release: Mutex::new(Some(release_rx)),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let config = NetConfig {
            request_bytes_max: 1024,
            connections_max: 4,
        };
        tokio::spawn(run(listener, handler.clone(), config, shutdown));
        let mut client = TcpStream::connect(addr).await.unwrap();
        for byte in [b's', b'a', b'b'] {
            client.write_all(&1i32.to_be_bytes()).await.unwrap();
            client.write_all(&[byte]).await.unwrap();
        }
        // The two requests behind the deferred one are handled while it is still owed...
        let deadline = Instant::now() + Duration::from_secs(5);
        while handler.seen.lock().unwrap().len() < 3 {
            assert!(
                Instant::now() < deadline,
                "requests after a deferred one not read"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ...but nothing is answered before it.
        let mut first = [0u8; 5];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut first)).await;
        assert!(early.is_err(), "an answer overtook the deferred one");
        release_tx.send(()).unwrap();
        let mut answers = [0u8; 15];
        client.read_exact(&mut answers).await.unwrap();
        let order: Vec<u8> = answers.chunks(5).map(|a| a[4]).collect();
        assert_eq!(order, b"sab");
    }
}
