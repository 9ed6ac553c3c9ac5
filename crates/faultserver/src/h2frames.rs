//! A scripted HTTP/2 server written at the frame level (RFC 9113): h2c with prior knowledge,
//! cleartext, on 127.0.0.1. The test decides, stream by stream, what the server does, and
//! when it sends GOAWAY with which last-stream-id, so it controls exactly which requests a
//! server refused, processed, or never saw.
//!
//! What it speaks: it reads the client preface, sends its SETTINGS (empty, or with
//! `SETTINGS_MAX_CONCURRENT_STREAMS`), ACKs the client's SETTINGS, answers PINGs, and accepts
//! WINDOW_UPDATE, PRIORITY, RST_STREAM and unknown frames. Streams are tracked by their
//! HEADERS (with CONTINUATION; the END_STREAM, END_HEADERS, PADDED and PRIORITY flags) and
//! DATA frames, whose bytes are recorded per stream; every DATA frame is given back with
//! WINDOW_UPDATEs (connection and stream), so bodies of any size flow. HPACK is not decoded:
//! requests are told apart by their body bytes (a stream whose HEADERS carry END_STREAM is
//! "bodyless", a GET). A response is a HEADERS frame with the single HPACK byte `0x88`
//! (indexed `:status: 200`) and END_HEADERS, then a DATA frame `ok` with END_STREAM.
//!
//! What it does with each stream is a [`Script`]: an [`Action`] per stream in the order the
//! streams arrive at the server (counted across all connections, from 1), and optionally a
//! GOAWAY after the n-th stream of a connection ([`Script::goaway_after`]).
//!
//! ```no_run
//! # async fn demo() {
//! use faultserver::h2frames::{code, Action, H2ScriptServer, Script};
//!
//! // Refuse the 2nd stream, reset the 3rd after reading it, GOAWAY after 4 on a connection.
//! let script = Script::new()
//!     .on(2, Action::Refuse)
//!     .on(3, Action::ResetAfterRead(code::INTERNAL_ERROR))
//!     .goaway_after(4);
//! let server = H2ScriptServer::start(script).await;
//! let url = server.url("/");
//! // ... send requests to `url` over h2c ...
//! assert_eq!(server.times_processed(b"post-1"), 1);
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// HTTP/2 error codes (RFC 9113 §7), for [`Action::ResetAfterRead`].
pub mod code {
    /// Graceful shutdown; no error.
    pub const NO_ERROR: u32 = 0x0;
    /// A protocol error was detected.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 0x8;
    /// The endpoint is generating excessive load.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// What the server does with one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the whole body (the stream is then *processed*), answer `200` `ok`.
    Respond,
    /// Read the whole body (processed), wait this long, then answer `200` `ok`.
    RespondAfter(Duration),
    /// Reset the stream with `REFUSED_STREAM` as soon as its HEADERS arrive, without
    /// reading its body: never processed (RFC 9113 §8.7).
    Refuse,
    /// Read the whole body (processed), then reset the stream with this error code (see
    /// [`code`]) instead of answering.
    ResetAfterRead(u32),
}

type ActionFn = dyn Fn(usize) -> Action + Send + Sync;

/// The server's behaviour: an [`Action`] for each stream, by its arrival index (1 for the
/// first stream the server handles, across all its connections; streams ignored after a
/// GOAWAY take no index), and connection-level settings.
#[derive(Clone)]
pub struct Script {
    default: Arc<ActionFn>,
    overrides: HashMap<usize, Action>,
    goaway_after: Option<usize>,
    goaway_connections: Option<usize>,
    max_concurrent_streams: Option<u32>,
}

impl Default for Script {
    fn default() -> Script {
        Script::new()
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("overrides", &self.overrides)
            .field("goaway_after", &self.goaway_after)
            .field("goaway_connections", &self.goaway_connections)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// [`Action::Respond`] to every stream, no GOAWAY, no stream limit.
    pub fn new() -> Script {
        Script::from_fn(|_| Action::Respond)
    }

    /// `f(index)` decides each stream, by its arrival index (from 1).
    pub fn from_fn(f: impl Fn(usize) -> Action + Send + Sync + 'static) -> Script {
        Script {
            default: Arc::new(f),
            overrides: HashMap::new(),
            goaway_after: None,
            goaway_connections: None,
            max_concurrent_streams: None,
        }
    }

    /// The stream of arrival index `index` (from 1) gets `action` (over the default).
    pub fn on(mut self, index: usize, action: Action) -> Script {
        self.overrides.insert(index, action);
        self
    }

    /// Each of the streams of arrival index in `indices` gets `action`.
    pub fn on_each(mut self, indices: impl IntoIterator<Item = usize>, action: Action) -> Script {
        for i in indices {
            self.overrides.insert(i, action);
        }
        self
    }

    /// On each connection, once the HEADERS of its `n`-th stream (`n` ≥ 1) have arrived, send
    /// `GOAWAY(NO_ERROR)` whose last-stream-id is that stream's id; go on with the streams up
    /// to it (by their actions), ignore every stream above it (never processed, never
    /// answered: its frames are dropped), and close the connection once those up to it are
    /// answered or reset.
    pub fn goaway_after(mut self, n: usize) -> Script {
        assert!(n >= 1, "goaway_after(0): the last stream id would be 0");
        self.goaway_after = Some(n);
        self
    }

    /// [`Script::goaway_after`] applies to the first `conns` connections only (in accept
    /// order); later ones never send GOAWAY. Default: every connection.
    pub fn goaway_on_first(mut self, conns: usize) -> Script {
        self.goaway_connections = Some(conns);
        self
    }

    /// Advertise `SETTINGS_MAX_CONCURRENT_STREAMS = n` in the server's SETTINGS. The server
    /// does not enforce it (script [`Action::Refuse`] for that); it records the most streams
    /// it had open at once on one connection ([`H2ScriptServer::max_concurrent`]).
    pub fn max_concurrent_streams(mut self, n: u32) -> Script {
        self.max_concurrent_streams = Some(n);
        self
    }

    /// The action for the stream of arrival index `index`.
    pub fn action(&self, index: usize) -> Action {
        self.overrides
            .get(&index)
            .copied()
            .unwrap_or_else(|| (self.default)(index))
    }
}

/// What became of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its head arrived; its body had not ended (yet, or before the connection ended).
    Receiving,
    /// Reset with `REFUSED_STREAM` on arrival, unprocessed.
    Refused,
    /// Above the connection's GOAWAY last-stream-id: never processed, never answered.
    Ignored,
    /// Processed; the answer is delayed ([`Action::RespondAfter`]).
    Processing,
    /// Processed and answered `200` `ok`.
    Responded,
    /// Processed, then reset with this code ([`Action::ResetAfterRead`]).
    ResetAfterRead(u32),
    /// The client reset it (RST_STREAM), after the server processed it or before.
    CanceledByClient {
        /// Whether the whole body had been read (and the stream processed) by then.
        processed: bool,
    },
}

/// One stream as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// The connection, numbered from 1 in accept order.
    pub conn: usize,
    /// The HTTP/2 stream id.
    pub stream_id: u32,
    /// Its arrival index for the script (from 1); `None` for a stream ignored after GOAWAY.
    pub index: Option<usize>,
    /// The action the script gave it (`None`: ignored).
    pub action: Option<Action>,
    /// Its HEADERS carried END_STREAM: a request without a body (GET-like).
    pub bodyless: bool,
    /// The body bytes received (for a refused or ignored stream: none are kept).
    pub body: Vec<u8>,
    /// What became of it.
    pub fate: Fate,
}

impl StreamRecord {
    /// The server read its whole body and acted on it (answered it, will answer it, or
    /// reset it after reading): the request was *processed*.
    pub fn processed(&self) -> bool {
        matches!(
            self.fate,
            Fate::Processing
                | Fate::Responded
                | Fate::ResetAfterRead(_)
                | Fate::CanceledByClient { processed: true }
        )
    }
}

#[derive(Default)]
struct State {
    accepted: usize,
    open: usize,
    next_index: usize,
    goaways: usize,
    max_concurrent: usize,
    records: Vec<StreamRecord>,
    protocol_errors: Vec<String>,
}

struct Shared {
    script: Script,
    state: Mutex<State>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }
}

/// The server. Dropping it stops it: no more accepts, and its connections are aborted.
pub struct H2ScriptServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Drop for H2ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(conns) = self.conns.lock() {
            for c in conns.iter() {
                c.abort();
            }
        }
    }
}

impl fmt::Debug for H2ScriptServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2ScriptServer")
            .field("addr", &self.addr)
            .field("script", &self.shared.script)
            .finish_non_exhaustive()
    }
}

impl H2ScriptServer {
    /// Starts on 127.0.0.1 (an ephemeral port), playing `script`.
    ///
    /// # Panics
    ///
    /// If 127.0.0.1 cannot be bound (a test environment problem).
    pub async fn start(script: Script) -> H2ScriptServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script,
            state: Mutex::new(State::default()),
        });
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, cs) = (shared.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let n = s.with(|st| {
                    st.accepted += 1;
                    st.open += 1;
                    st.accepted
                });
                let s = s.clone();
                let handle = tokio::spawn(async move {
                    let _open = OpenGuard(s.clone());
                    serve(tcp, n, s).await;
                });
                if let Ok(mut cs) = cs.lock() {
                    cs.retain(|h: &AbortHandle| !h.is_finished());
                    cs.push(handle.abort_handle());
                }
            }
        });
        H2ScriptServer {
            addr,
            shared,
            task,
            conns,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.with(|s| s.accepted)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.with(|s| s.open)
    }

    /// GOAWAY frames sent so far.
    pub fn goaways_sent(&self) -> usize {
        self.shared.with(|s| s.goaways)
    }

    /// Streams whose HEADERS arrived, ignored ones included.
    pub fn streams_seen(&self) -> usize {
        self.shared.with(|s| s.records.len())
    }

    /// Streams whose HEADERS carried END_STREAM (no body: GET-like), ignored ones included.
    pub fn bodyless_streams(&self) -> usize {
        self.shared
            .with(|s| s.records.iter().filter(|r| r.bodyless).count())
    }

    /// The most streams open at once on one connection (head received, not yet answered,
    /// reset or ignored).
    pub fn max_concurrent(&self) -> usize {
        self.shared.with(|s| s.max_concurrent)
    }

    /// Protocol errors that ended a connection (`"conn N: what"`): empty when every client
    /// spoke HTTP/2 as this server understands it.
    pub fn protocol_errors(&self) -> Vec<String> {
        self.shared.with(|s| s.protocol_errors.clone())
    }

    /// Every stream seen, in arrival order.
    pub fn records(&self) -> Vec<StreamRecord> {
        self.shared.with(|s| s.records.clone())
    }

    /// The streams processed ([`StreamRecord::processed`]), in arrival order.
    pub fn processed(&self) -> Vec<StreamRecord> {
        self.shared.with(|s| {
            s.records
                .iter()
                .filter(|r| r.processed())
                .cloned()
                .collect()
        })
    }

    /// The bodies of the streams processed, in arrival order.
    pub fn processed_bodies(&self) -> Vec<Vec<u8>> {
        self.processed().into_iter().map(|r| r.body).collect()
    }

    /// How many processed streams carried exactly `body`.
    pub fn times_processed(&self, body: &[u8]) -> usize {
        self.shared.with(|s| {
            s.records
                .iter()
                .filter(|r| r.processed() && r.body == body)
                .count()
        })
    }
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.with(|s| s.open -= 1);
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// The HPACK block of the response head: static table index 8, `:status: 200`.
const STATUS_200: &[u8] = &[0x88];

/// A frame that breaks the protocol badly enough that the connection ends.
#[derive(Debug)]
struct Broken(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the body.
    Receiving,
    /// Processed; the answer comes from the timer.
    Waiting,
    /// Nothing more from the server; the client's frames for it are dropped.
    Done,
}

struct Stream {
    rec: usize,
    action: Action,
    phase: Phase,
}

struct Conn {
    n: usize,
    shared: Arc<Shared>,
    streams: HashMap<u32, Stream>,
    /// A header block in progress: its stream and whether its HEADERS carried END_STREAM.
    continuing: Option<(u32, bool)>,
    /// The highest stream id opened by the client.
    max_id: u32,
    /// Streams seen on this connection.
    count: usize,
    goaway_after: Option<usize>,
    /// The last-stream-id of the GOAWAY sent.
    goaway: Option<u32>,
    out: Vec<u8>,
    timer: mpsc::UnboundedSender<u32>,
}

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Strips the padding of a PADDED frame's payload.
fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], Broken> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(Broken("PADDED without length"))?;
    let keep = rest
        .len()
        .checked_sub(pad as usize)
        .ok_or(Broken("padding longer than the frame"))?;
    Ok(&rest[..keep])
}

impl Conn {
    fn open_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.phase != Phase::Done)
            .count()
    }

    fn set_fate(&self, rec: usize, fate: Fate) {
        self.shared.with(|s| s.records[rec].fate = fate);
    }

    fn respond(&mut self, id: u32) {
        frame(&mut self.out, HEADERS, END_HEADERS, id, STATUS_200);
        frame(&mut self.out, DATA, END_STREAM, id, b"ok");
    }

    fn reset(&mut self, id: u32, code: u32) {
        frame(&mut self.out, RST_STREAM, 0, id, &code.to_be_bytes());
    }

    fn window_update(&mut self, id: u32, n: usize) {
        frame(
            &mut self.out,
            WINDOW_UPDATE,
            0,
            id,
            &(n as u32).to_be_bytes(),
        );
    }

    /// Handles one frame.
    fn on_frame(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        if let Some((cid, _)) = self.continuing {
            if ty != CONTINUATION || id != cid {
                return Err(Broken("a header block interrupted"));
            }
        }
        match ty {
            DATA => self.on_data(flags, id, payload),
            HEADERS => {
                if id == 0 {
                    return Err(Broken("HEADERS on stream 0"));
                }
                let mut block = unpad(flags, payload)?;
                if flags & PRIORITY != 0 {
                    block = block.get(5..).ok_or(Broken("PRIORITY flag, short frame"))?;
                }
                let _ = block; // HPACK is not decoded.
                let end_stream = flags & END_STREAM != 0;
                if flags & END_HEADERS != 0 {
                    self.on_header_block(id, end_stream);
                } else {
                    self.continuing = Some((id, end_stream));
                }
                Ok(())
            }
            CONTINUATION => {
                let Some((cid, end_stream)) = self.continuing else {
                    return Err(Broken("CONTINUATION without HEADERS"));
                };
                if flags & END_HEADERS != 0 {
                    self.continuing = None;
                    self.on_header_block(cid, end_stream);
                }
                Ok(())
            }
            RST_STREAM => {
                if let Some(s) = self.streams.get_mut(&id) {
                    let fate = match s.phase {
                        Phase::Receiving => Some(Fate::CanceledByClient { processed: false }),
                        Phase::Waiting => Some(Fate::CanceledByClient { processed: true }),
                        Phase::Done => None,
                    };
                    s.phase = Phase::Done;
                    let rec = s.rec;
                    if let Some(f) = fate {
                        self.set_fate(rec, f);
                    }
                }
                Ok(())
            }
            SETTINGS => {
                if id != 0 || !payload.chunks_exact(6).remainder().is_empty() {
                    return Err(Broken("malformed SETTINGS"));
                }
                if flags & ACK == 0 {
                    frame(&mut self.out, SETTINGS, ACK, 0, &[]);
                }
                Ok(())
            }
            PING => {
                if payload.len() != 8 {
                    return Err(Broken("malformed PING"));
                }
                if flags & ACK == 0 {
                    frame(&mut self.out, PING, ACK, 0, payload);
                }
                Ok(())
            }
            // WINDOW_UPDATE, PRIORITY, GOAWAY from the client, PUSH_PROMISE and unknown
            // types: nothing to do (responses are two bytes; the connection ends at EOF).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        // Flow control counts the whole payload, padding included; give it all back.
        if !payload.is_empty() {
            self.window_update(0, payload.len());
        }
        let data = unpad(flags, payload)?;
        let end = flags & END_STREAM != 0;
        let Some(s) = self.streams.get(&id) else {
            return Ok(());
        };
        if s.phase != Phase::Receiving {
            return Ok(());
        }
        let rec = s.rec;
        if !data.is_empty() {
            self.shared
                .with(|st| st.records[rec].body.extend_from_slice(data));
        }
        if end {
            self.body_done(id);
        } else if !payload.is_empty() {
            self.window_update(id, payload.len());
        }
        Ok(())
    }

    /// A complete header block for stream `id`: a new request, or trailers.
    fn on_header_block(&mut self, id: u32, end_stream: bool) {
        if let Some(s) = self.streams.get(&id) {
            // Trailers.
            if end_stream && s.phase == Phase::Receiving {
                self.body_done(id);
            }
            return;
        }
        if id <= self.max_id || id & 1 == 0 {
            return; // a closed stream, or not the client's: nothing to do
        }
        self.max_id = id;
        self.count += 1;
        let ignored = self.goaway.is_some_and(|last| id > last);
        let script = &self.shared.script;
        let (rec, action) = self.shared.with(|st| {
            let (index, action) = if ignored {
                (None, None)
            } else {
                st.next_index += 1;
                (Some(st.next_index), Some(script.action(st.next_index)))
            };
            st.records.push(StreamRecord {
                conn: self.n,
                stream_id: id,
                index,
                action,
                bodyless: end_stream,
                body: Vec::new(),
                fate: if ignored {
                    Fate::Ignored
                } else {
                    Fate::Receiving
                },
            });
            (st.records.len() - 1, action)
        });
        match action {
            None => {
                self.streams.insert(
                    id,
                    Stream {
                        rec,
                        action: Action::Respond,
                        phase: Phase::Done,
                    },
                );
            }
            Some(Action::Refuse) => {
                self.streams.insert(
                    id,
                    Stream {
                        rec,
                        action: Action::Refuse,
                        phase: Phase::Done,
                    },
                );
                self.reset(id, code::REFUSED_STREAM);
                self.set_fate(rec, Fate::Refused);
            }
            Some(action) => {
                self.streams.insert(
                    id,
                    Stream {
                        rec,
                        action,
                        phase: Phase::Receiving,
                    },
                );
                let open = self.open_streams();
                self.shared
                    .with(|st| st.max_concurrent = st.max_concurrent.max(open));
                if end_stream {
                    self.body_done(id);
                }
            }
        }
        if self.goaway.is_none() && self.goaway_after == Some(self.count) {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&code::NO_ERROR.to_be_bytes());
            frame(&mut self.out, GOAWAY, 0, 0, &payload);
            self.goaway = Some(id);
            self.shared.with(|st| st.goaways += 1);
        }
    }

    /// The body of stream `id` ended: it is processed; act.
    fn body_done(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let (rec, action) = (s.rec, s.action);
        match action {
            Action::Respond | Action::Refuse => {
                s.phase = Phase::Done;
                self.respond(id);
                self.set_fate(rec, Fate::Responded);
            }
            Action::RespondAfter(d) => {
                s.phase = Phase::Waiting;
                self.set_fate(rec, Fate::Processing);
                let tx = self.timer.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(id);
                });
            }
            Action::ResetAfterRead(code) => {
                s.phase = Phase::Done;
                self.reset(id, code);
                self.set_fate(rec, Fate::ResetAfterRead(code));
            }
        }
    }

    /// A delayed answer is due.
    fn on_timer(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if s.phase == Phase::Waiting {
                s.phase = Phase::Done;
                let rec = s.rec;
                self.respond(id);
                self.set_fate(rec, Fate::Responded);
            }
        }
    }

    /// GOAWAY was sent and every stream up to its last-stream-id is over.
    fn finished(&self) -> bool {
        self.goaway.is_some_and(|last| {
            self.continuing.is_none_or(|(id, _)| id > last)
                && self
                    .streams
                    .iter()
                    .all(|(id, s)| *id > last || s.phase == Phase::Done)
        })
    }
}

/// Takes one whole frame off the front of `buf`: (type, flags, stream id, payload).
fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, u8, u32, Vec<u8>)> {
    if buf.len() < 9 {
        return None;
    }
    let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
    if buf.len() < 9 + len {
        return None;
    }
    let (ty, flags) = (buf[3], buf[4]);
    let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    let payload = buf[9..9 + len].to_vec();
    buf.drain(..9 + len);
    Some((ty, flags, id, payload))
}

async fn read_more(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> bool {
    buf.reserve(32 * 1024);
    matches!(rd.read_buf(buf).await, Ok(n) if n > 0)
}

async fn serve(tcp: TcpStream, n: usize, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let mut buf = Vec::new();
    while buf.len() < PREFACE.len() {
        if !read_more(&mut rd, &mut buf).await {
            return;
        }
    }
    if &buf[..PREFACE.len()] != PREFACE {
        shared.with(|s| {
            s.protocol_errors
                .push(format!("conn {n}: not the HTTP/2 client preface"))
        });
        return;
    }
    buf.drain(..PREFACE.len());
    let script = shared.script.clone();
    let goaway_after = script
        .goaway_after
        .filter(|_| script.goaway_connections.is_none_or(|k| n <= k));
    let (timer, mut due) = mpsc::unbounded_channel();
    let mut conn = Conn {
        n,
        shared,
        streams: HashMap::new(),
        continuing: None,
        max_id: 0,
        count: 0,
        goaway_after,
        goaway: None,
        out: Vec::new(),
        timer,
    };
    let mut settings = Vec::new();
    if let Some(max) = script.max_concurrent_streams {
        settings.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
        settings.extend_from_slice(&max.to_be_bytes());
    }
    frame(&mut conn.out, SETTINGS, 0, 0, &settings);
    loop {
        while let Some((ty, flags, id, payload)) = take_frame(&mut buf) {
            if let Err(Broken(what)) = conn.on_frame(ty, flags, id, &payload) {
                conn.shared
                    .with(|s| s.protocol_errors.push(format!("conn {n}: {what}")));
                let _ = wr.write_all(&conn.out).await;
                return;
            }
        }
        if !conn.out.is_empty() {
            let out = std::mem::take(&mut conn.out);
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
        if conn.finished() {
            break;
        }
        tokio::select! {
            more = read_more(&mut rd, &mut buf) => {
                if !more {
                    return;
                }
            }
            Some(id) = due.recv() => conn.on_timer(id),
        }
    }
    // Every stream up to the GOAWAY's last-stream-id is over: close. Half-close first and
    // read what the client still sends, so the close is a FIN, not a reset that could
    // destroy answers the client has not read yet.
    let _ = wr.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http::Request;

    async fn client(server: &H2ScriptServer) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send
    }

    fn req(server: &H2ScriptServer, method: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(server.url("/"))
            .body(())
            .unwrap()
    }

    /// Sends a request (with `body` unless empty) and reads the answer: `Ok(body)` or the
    /// stream's error.
    async fn send(
        h2: &h2::client::SendRequest<Bytes>,
        server: &H2ScriptServer,
        body: &[u8],
    ) -> Result<Bytes, h2::Error> {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let (resp, mut stream) = h2
            .clone()
            .ready()
            .await?
            .send_request(req(server, method), body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body), true)?;
        }
        let resp = resp.await?;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut all = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    #[tokio::test]
    async fn responds_to_gets_and_posts_and_records_bodies() {
        let server = H2ScriptServer::start(Script::new()).await;
        let h2 = client(&server).await;
        assert_eq!(send(&h2, &server, b"").await.unwrap(), "ok");
        assert_eq!(send(&h2, &server, b"post-1").await.unwrap(), "ok");
        let recs = server.records();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].stream_id, recs[0].bodyless, recs[0].fate),
            (1, true, Fate::Responded)
        );
        assert_eq!(
            (recs[1].stream_id, recs[1].index, recs[1].body.as_slice()),
            (3, Some(2), &b"post-1"[..])
        );
        assert_eq!(server.times_processed(b"post-1"), 1);
        assert_eq!(server.bodyless_streams(), 1);
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn a_large_body_flows() {
        let server = H2ScriptServer::start(Script::new()).await;
        let h2 = client(&server).await;
        let big: Vec<u8> = (0..400 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(send(&h2, &server, &big).await.unwrap(), "ok");
        assert_eq!(server.processed_bodies(), vec![big]);
    }

    #[tokio::test]
    async fn refuses_and_resets_the_scripted_streams() {
        let script = Script::new()
            .on(2, Action::Refuse)
            .on(3, Action::ResetAfterRead(code::INTERNAL_ERROR));
        let server = H2ScriptServer::start(script).await;
        let h2 = client(&server).await;
        assert!(send(&h2, &server, b"a").await.is_ok());
        let refused = send(&h2, &server, b"b").await.unwrap_err();
        assert_eq!(refused.reason(), Some(h2::Reason::REFUSED_STREAM));
        assert!(refused.is_reset() && refused.is_remote(), "{refused:?}");
        let reset = send(&h2, &server, b"c").await.unwrap_err();
        assert_eq!(reset.reason(), Some(h2::Reason::INTERNAL_ERROR));
        assert!(send(&h2, &server, b"d").await.is_ok());
        assert_eq!(
            server.processed_bodies(),
            vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        let fates: Vec<Fate> = server.records().iter().map(|r| r.fate).collect();
        assert_eq!(
            fates,
            [
                Fate::Responded,
                Fate::Refused,
                Fate::ResetAfterRead(code::INTERNAL_ERROR),
                Fate::Responded
            ]
        );
    }

    #[tokio::test]
    async fn goaway_answers_streams_up_to_the_last_id_ignores_later_ones_and_closes() {
        let script = Script::new()
            .on(1, Action::RespondAfter(Duration::from_millis(100)))
            .goaway_after(2);
        let server = H2ScriptServer::start(script).await;
        let h2 = client(&server).await;
        let mut h2 = h2.ready().await.unwrap();
        // Four streams at once: the GOAWAY comes after the second one's HEADERS.
        let mut pending = Vec::new();
        for i in 0..4 {
            let (resp, mut body) = h2.send_request(req(&server, "POST"), false).unwrap();
            body.send_data(Bytes::from(format!("post-{i}")), true)
                .unwrap();
            pending.push(resp);
        }
        let mut results = Vec::new();
        for resp in pending {
            results.push(resp.await.map(|r| r.status()));
        }
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        for r in &results[2..] {
            let e = r.as_ref().unwrap_err();
            assert!(e.is_go_away() && e.is_remote(), "{e:?}");
            assert_eq!(e.reason(), Some(h2::Reason::NO_ERROR));
        }
        let recs = server.records();
        let fates: Vec<(u32, Fate)> = recs.iter().map(|r| (r.stream_id, r.fate)).collect();
        assert_eq!(
            fates,
            [
                (1, Fate::Responded),
                (3, Fate::Responded),
                (5, Fate::Ignored),
                (7, Fate::Ignored)
            ]
        );
        assert_eq!(
            server.processed_bodies(),
            [b"post-0".to_vec(), b"post-1".to_vec()]
        );
        assert_eq!(server.goaways_sent(), 1);
        for _ in 0..200 {
            if server.open_connections() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection stays open after its GOAWAY");
    }

    /// Reads frames until one of type `ty` arrives: (flags, stream id, payload).
    async fn until_frame(tcp: &mut TcpStream, buf: &mut Vec<u8>, ty: u8) -> (u8, u32, Vec<u8>) {
        loop {
            while let Some((t, flags, id, payload)) = take_frame(buf) {
                if t == ty {
                    return (flags, id, payload);
                }
            }
            buf.reserve(4096);
            assert!(tcp.read_buf(buf).await.unwrap() > 0, "EOF");
        }
    }

    #[tokio::test]
    async fn handles_continuation_padding_and_priority_flags_from_raw_frames() {
        let server = H2ScriptServer::start(Script::new()).await;
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        // HEADERS, PADDED | PRIORITY, no END_HEADERS: pad length 2, priority (5 bytes), a
        // fragment (not valid HPACK: the server does not decode it), 2 bytes of padding.
        let mut headers = vec![2u8, 0, 0, 0, 0, 16];
        headers.extend_from_slice(b"frag");
        headers.extend_from_slice(&[0, 0]);
        frame(&mut out, HEADERS, PADDED | PRIORITY, 1, &headers);
        frame(&mut out, CONTINUATION, 0, 1, b"more");
        frame(&mut out, CONTINUATION, END_HEADERS, 1, b"end");
        // DATA, PADDED: "post-" with 3 bytes of padding, then "17" with END_STREAM.
        frame(
            &mut out,
            DATA,
            PADDED,
            1,
            &[3, b'p', b'o', b's', b't', b'-', 0, 0, 0],
        );
        frame(&mut out, DATA, END_STREAM, 1, b"17");
        tcp.write_all(&out).await.unwrap();
        let mut buf = Vec::new();
        let (flags, id, block) = until_frame(&mut tcp, &mut buf, HEADERS).await;
        assert_eq!((flags, id, block.as_slice()), (END_HEADERS, 1, STATUS_200));
        let (flags, id, data) = until_frame(&mut tcp, &mut buf, DATA).await;
        assert_eq!((flags, id, data.as_slice()), (END_STREAM, 1, &b"ok"[..]));
        assert_eq!(server.processed_bodies(), [b"post-17".to_vec()]);
        assert!(server.protocol_errors().is_empty());
        // A frame between HEADERS and its CONTINUATION breaks the connection.
        let mut out = Vec::new();
        frame(&mut out, HEADERS, 0, 3, b"x");
        frame(&mut out, PING, 0, 0, &[0; 8]);
        tcp.write_all(&out).await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        assert_eq!(
            server.protocol_errors(),
            ["conn 1: a header block interrupted"]
        );
    }

    #[tokio::test]
    async fn advertises_max_concurrent_streams_and_answers_pings() {
        let server = H2ScriptServer::start(Script::new().max_concurrent_streams(3)).await;
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let (h2, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let mut ping = conn.ping_pong().unwrap();
        let conn_task = tokio::spawn(async move {
            let _ = (&mut conn).await;
            conn.max_concurrent_send_streams()
        });
        ping.ping(h2::Ping::opaque()).await.unwrap();
        drop(ping);
        assert_eq!(send(&h2, &server, b"x").await.unwrap(), "ok");
        drop(h2);
        assert_eq!(conn_task.await.unwrap(), 3);
    }
}
