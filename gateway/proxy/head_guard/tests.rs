//! The head guard over in-memory connections, with paused time.
use super::*;
use std::sync::atomic::Ordering;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{timeout, Instant};

const MAX: usize = 16 * 1024;
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn limits(timeout: Duration) -> HeadLimits {
    HeadLimits {
        max_head_bytes: MAX,
        timeout,
    }
}

/// A guard over the server end of an in-memory connection whose pipes
/// hold `capacity` bytes, and the client end.
fn connection(capacity: usize, timeout: Duration) -> (HeadGuard, DuplexStream) {
    let (client, server) = duplex(capacity);
    (HeadGuard::new(Box::new(server), limits(timeout)), client)
}

fn guarded(capacity: usize) -> (HeadGuard, DuplexStream) {
    connection(capacity, Duration::from_secs(10))
}

/// A head of `lines` 100-byte header lines, without its empty last line.
fn padded_head(lines: usize) -> Vec<u8> {
    let mut head = b"GET /padded HTTP/1.1\r\n".to_vec();
    for i in 0..lines {
        head.extend_from_slice(format!("x-pad-{i:04}: {}\r\n", "a".repeat(86)).as_bytes());
    }
    head
}

/// One read, into a buffer as large as Pingora's grows to, within a
/// minute (which passes at once in the tests with time paused).
async fn read(guard: &mut HeadGuard) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; 64 * 1024];
    let n = timeout(Duration::from_secs(60), guard.read(&mut buf))
        .await
        .expect("a read within a minute")?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads until `len` bytes came: them, and how many reads it took.
async fn read_len(guard: &mut HeadGuard, len: usize) -> (Vec<u8>, usize) {
    let mut got = Vec::new();
    let mut reads = 0;
    while got.len() < len {
        let bytes = read(guard).await.expect("a read");
        assert!(!bytes.is_empty(), "EOF after {} bytes", got.len());
        got.extend_from_slice(&bytes);
        reads += 1;
    }
    (got, reads)
}

/// One poll of a read, with nothing to wake: what the guard has now.
fn poll_once(guard: &mut HeadGuard) -> Poll<io::Result<Vec<u8>>> {
    let mut buf = [0; 1024];
    let mut read = ReadBuf::new(&mut buf);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let polled = Pin::new(guard).poll_read(&mut cx, &mut read);
    polled.map_ok(|()| read.filled().to_vec())
}

/// What `head_answered` does: the request of the last head was answered.
fn answered(guard: &HeadGuard, heads: usize) {
    guard.answered.fetch_add(heads, Ordering::Relaxed);
}

fn refused(polled: Poll<io::Result<Vec<u8>>>) -> bool {
    matches!(polled, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::InvalidData)
}

/// What the guard wrote back to the client, `len` bytes of it.
async fn answer(client: &mut DuplexStream, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    timeout(Duration::from_secs(5), client.read_exact(&mut got))
        .await
        .expect("an answer in time")
        .expect("an answer");
    got
}

fn buffered(guard: &HeadGuard) -> usize {
    guard.held.capacity() + guard.after.capacity()
}

/// Scans `pieces` in turn: where the head ended among them, if it did.
fn scan_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max: usize,
) -> Result<Option<usize>, Rejection> {
    let mut scan = HeadScan::default();
    let mut offset = 0;
    for piece in pieces {
        if let Some(end) = scan.scan(piece, max)? {
            return Ok(Some(offset + end));
        }
        offset += piece.len();
    }
    Ok(None)
}

#[test]
fn head_end_is_found_across_read_boundaries() {
    let heads: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET / HTTP/1.1\nhost: a\n\n",
        b"GET / HTTP/1.1\r\nhost: a\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\n\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\r\n\nGET / HTTP/1.1\r\nhost: \r\n\r\n",
    ];
    for head in heads {
        let bytes = [head, b"BODY\r\n\r\n"].concat();
        let end = Ok(Some(head.len()));
        for split in 0..=bytes.len() {
            let (first, second) = bytes.split_at(split);
            assert_eq!(
                scan_pieces([first, second], MAX),
                end,
                "{:?} at {split}",
                head.escape_ascii()
            );
        }
        assert_eq!(
            scan_pieces(bytes.chunks(1), MAX),
            end,
            "{:?}",
            head.escape_ascii()
        );
    }
}

#[test]
fn size_limit_counts_the_head_before_its_empty_line() {
    let heads: [(&[u8], usize); 2] = [
        (b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", 2),
        (b"GET / HTTP/1.1\nhost: a\n\n", 1),
    ];
    for (head, empty_line) in heads {
        let before_empty_line = head.len() - empty_line;
        for size in [head.len(), 1] {
            let end = scan_pieces(head.chunks(size), before_empty_line);
            assert_eq!(end, Ok(Some(head.len())));
            let end = scan_pieces(head.chunks(size), before_empty_line - 1);
            assert_eq!(end, Err(Rejection::TooLarge));
        }
    }
    // The CR that may begin the empty line does not count yet.
    let unfinished = b"GET / HTTP/1.1\r\nhost: a\r\n\r";
    let end = scan_pieces([unfinished.as_slice()], unfinished.len() - 1);
    assert_eq!(end, Ok(None));
}

#[tokio::test(start_paused = true)]
async fn trickled_head_reaches_the_reader_in_few_whole_reads() {
    // A pipe of one byte: the guard gets the head one byte per read.
    let (mut guard, mut client) = guarded(1);
    let head = [padded_head(MAX / 100 - 1), b"\r\n".to_vec()].concat();
    assert!(head.len() <= MAX);
    let sent = head.clone();
    let writer = tokio::spawn(async move {
        for byte in sent {
            client.write_all(&[byte]).await.unwrap();
        }
        client
    });
    let (got, reads) = read_len(&mut guard, head.len()).await;
    assert_eq!(got, head);
    assert!(reads <= MAX / RELEASE_AT + 1, "{reads} reads");
    writer.await.unwrap();
}

#[tokio::test]
async fn oversized_head_gets_431_and_little_is_buffered() {
    let (mut guard, mut client) = guarded(2 << 20);
    client.write_all(&padded_head(10_000)).await.unwrap();
    let mut received = 0;
    let error = loop {
        match read(&mut guard).await {
            Ok(bytes) => {
                assert!(!bytes.is_empty());
                received += bytes.len();
                assert!(buffered(&guard) <= MAX + READ_CHUNK, "{}", buffered(&guard));
            }
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains(&MAX.to_string()), "{error}");
    assert!(received <= MAX + READ_CHUNK, "{received} bytes passed");
    assert_eq!(
        answer(&mut client, Rejection::TooLarge.response().len()).await,
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(buffered(&guard), 0);
    assert_eq!(
        read(&mut guard).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[tokio::test(start_paused = true)]
async fn stalled_head_gets_408_after_its_timeout() {
    let (mut guard, mut client) = connection(64 * 1024, Duration::from_millis(200));
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: a")
        .await
        .unwrap();
    let started = Instant::now();
    let error = read(&mut guard).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        answer(&mut client, Rejection::TimedOut.response().len()).await,
        b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_not_timed_out() {
    let (mut guard, mut client) = connection(64 * 1024, Duration::from_millis(200));
    // An hour passes at once with time paused, when nothing else can happen.
    let idle = timeout(Duration::from_secs(3600), guard.read(&mut [0; 1024])).await;
    assert!(
        idle.is_err(),
        "the guard ended an idle connection: {idle:?}"
    );
    let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    client.write_all(head).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), head);
}

#[tokio::test]
async fn malformed_request_lines_get_400() {
    let lines: [&[u8]; 12] = [
        b"GET /a b HTTP/1.1",
        b"GET /a\tb HTTP/1.1",
        b"GET\t/a HTTP/1.1",
        b"GET /a\x01b HTTP/1.1",
        b"GET /a\x7f HTTP/1.1",
        b"GET  /a HTTP/1.1",
        b"GET /a  HTTP/1.1",
        b"GET /a HTTP/1.1 ",
        b" GET /a HTTP/1.1",
        b"G(T /a HTTP/1.1",
        b"GET /a",
        b"GET /a HTTP/1.1\rx",
    ];
    for line in lines {
        let (mut guard, mut client) = guarded(64 * 1024);
        client
            .write_all(&[line, b"\r\nhost: a\r\n\r\n"].concat())
            .await
            .unwrap();
        let error = read(&mut guard).await.unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::InvalidData,
            "{:?}",
            line.escape_ascii()
        );
        assert_eq!(answer(&mut client, BAD_REQUEST.len()).await, BAD_REQUEST);
    }
}

#[tokio::test]
async fn well_formed_heads_pass_whole() {
    let heads: [&[u8]; 6] = [
        b"GET /a%20b HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /caf\xc3\xa9?q=\"x\" HTTP/1.1\r\nhost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET http://a/b?c=d HTTP/1.0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET / HTTP/1.1\nhost: a\n\n",
    ];
    for head in heads {
        let (mut guard, mut client) = guarded(64 * 1024);
        client.write_all(head).await.unwrap();
        // Held until its end: one read brings it all.
        assert_eq!(
            read(&mut guard).await.unwrap(),
            head,
            "{:?}",
            head.escape_ascii()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pipelined_heads_are_each_checked() {
    let first: &[u8] = b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n";
    let second: &[u8] = b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n";
    let (mut guard, mut client) = guarded(64 * 1024);
    client.write_all(&[first, second].concat()).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), [first, second].concat());
    guard.framed(Framing::None);
    assert!(poll_once(&mut guard).is_pending());
    assert_eq!(
        guard.phase,
        Phase::Awaiting,
        "the second head was seen whole"
    );

    let bad: &[u8] = b"GET /2 x HTTP/1.1\r\nhost: a\r\n\r\n";
    let (mut guard, mut client) = guarded(64 * 1024);
    client.write_all(&[first, bad].concat()).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), [first, bad].concat());
    guard.framed(Framing::None);
    answered(&guard, 1);
    assert_eq!(
        read(&mut guard).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    assert_eq!(answer(&mut client, BAD_REQUEST.len()).await, BAD_REQUEST);

    // Framings told before the guard reads again are taken in order.
    let (mut guard, mut client) = guarded(64 * 1024);
    let three = [first, second, bad].concat();
    client.write_all(&three).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), three);
    guard.framed(Framing::None);
    guard.framed(Framing::None);
    answered(&guard, 2);
    assert!(refused(poll_once(&mut guard)));
    assert_eq!(answer(&mut client, BAD_REQUEST.len()).await, BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn a_head_refused_while_a_response_is_written_gets_no_answer_of_its_own() {
    let first: &[u8] = b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n";
    let bad: &[u8] = b"GET /2 x HTTP/1.1\r\nhost: a\r\n\r\n";
    let (mut guard, mut client) = guarded(64 * 1024);
    client.write_all(&[first, bad].concat()).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), [first, bad].concat());
    // The proxy read the first head and is still answering it.
    guard.framed(Framing::None);
    assert!(refused(poll_once(&mut guard)));
    // Nothing was written into the stream of the first answer.
    let mut byte = [0u8; 1];
    let written = timeout(Duration::from_millis(100), client.read(&mut byte)).await;
    assert!(
        written.is_err(),
        "the guard wrote inside a response: {written:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn length_framed_body_passes_untouched_then_the_next_head_is_checked() {
    let body: &[u8] = b"\r\n\r\nGET /a b HTTP/1.1\r\n\r\n\x00\x01 end of body";
    let head = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len());
    let next: &[u8] = b"GET /next x HTTP/1.1\r\n\r\n";

    // Part of the body comes with the head, the rest after the verdict.
    let (mut guard, mut client) = guarded(64 * 1024);
    let with_head = [head.as_bytes(), &body[..6]].concat();
    client.write_all(&with_head).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), with_head);
    guard.framed(Framing::Length(body.len() as u64));
    answered(&guard, 1);
    client
        .write_all(&[&body[6..], next].concat())
        .await
        .unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), &body[6..]);
    assert_eq!(
        read(&mut guard).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    assert_eq!(answer(&mut client, BAD_REQUEST.len()).await, BAD_REQUEST);

    // All of it comes with the head: the remembered bytes count first.
    for (next, passes) in [
        (next, false),
        (b"GET /next HTTP/1.1\r\n\r\n".as_slice(), true),
    ] {
        let (mut guard, mut client) = guarded(64 * 1024);
        let all = [head.as_bytes(), body, next].concat();
        client.write_all(&all).await.unwrap();
        assert_eq!(read(&mut guard).await.unwrap(), all);
        guard.framed(Framing::Length(body.len() as u64));
        answered(&guard, 1);
        if passes {
            assert!(poll_once(&mut guard).is_pending());
            assert_eq!(guard.phase, Phase::Awaiting, "the next head was seen whole");
        } else {
            assert_eq!(
                read(&mut guard).await.unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
            assert_eq!(answer(&mut client, BAD_REQUEST.len()).await, BAD_REQUEST);
        }
    }
}

#[tokio::test]
async fn unframed_passes_everything_after() {
    let head: &[u8] = b"GET /chat HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
    let (mut guard, mut client) = guarded(1 << 20);
    client.write_all(head).await.unwrap();
    assert_eq!(read(&mut guard).await.unwrap(), head);
    guard.framed(Framing::Unframed);
    let rest: Vec<u8> = b"GET /a b HTTP/1.1\r\n\r\n"
        .iter()
        .copied()
        .chain((0..100_000).map(|i| (i % 251) as u8))
        .collect();
    client.write_all(&rest).await.unwrap();
    assert_eq!(read_len(&mut guard, rest.len()).await.0, rest);
    assert_eq!(guard.phase, Phase::Through);
}

#[tokio::test]
async fn head_read_reaches_the_guard_through_a_pingora_session() {
    let (mut client, server) = duplex(64 * 1024);
    let stream = wrap(Box::new(server), limits(Duration::from_secs(10)));
    let mut session = Session::new_h1(stream);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(session.read_request().await.unwrap());
    head_read(&session, Framing::Length(7));
    let guard = session.stream().and_then(guard_of).expect("the guard");
    assert_eq!(*guard.framings.lock().unwrap(), [Framing::Length(7)]);

    // Without a guard, nothing to tell.
    let (mut client, server) = duplex(64 * 1024);
    let mut session = Session::new_h1(Box::new(server));
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(session.read_request().await.unwrap());
    head_read(&session, Framing::None);
    assert!(session.stream().and_then(guard_of).is_none());
}
