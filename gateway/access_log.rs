//! The access log: one JSON line per request, written by a thread of its
//! own so that a slow disk never holds a request up. Lines wait in a
//! bounded queue; when the writer falls that far behind, lines are dropped
//! and counted (`claimgate_access_log_dropped_total`) rather than queued
//! without bound. A file log is reopened on SIGUSR1, after logrotate moved it.
//!
//! What a line holds is chosen so that it never carries a credential: no
//! header is logged, and the value of every query parameter a rule reads a
//! token from is replaced by `[redacted]`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

/// Lines that may wait for the writer.
const QUEUE: usize = 65_536;

/// Where the log goes: `Settings.accessLog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `off`, `stdout`, or a file path.
    pub fn parse(text: &str) -> Target {
        match text {
            "" | "off" => Target::Off,
            "stdout" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

enum Message {
    Line(String),
    Reopen,
}

/// The handle requests write through; cheap to share.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    queue: Option<SyncSender<Message>>,
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub client: Option<String>,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query, token parameters redacted.
    pub path: &'a str,
    /// 0 when no answer was sent (the client went away first).
    pub status: u16,
    pub route: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub upstream: Option<String>,
    pub duration_seconds: f64,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    /// `valid`, `cached`, or why the token was refused; absent without one.
    pub jwt: Option<&'static str>,
    pub issuer: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// Why the gateway answered itself (`claimgate_rejections_total`).
    pub rejection: Option<&'static str>,
    /// The AuthorizationPolicy that decided, when one did.
    pub policy: Option<&'a str>,
    /// The `x-request-id` sent upstream (the gateway's, unless
    /// `preserveExternalRequestId` kept the client's).
    pub request_id: Option<&'a str>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(target: &Target) -> std::io::Result<AccessLog> {
        let sink = match target {
            Target::Off => return Ok(AccessLog::default()),
            Target::Stdout => Sink::Stdout,
            Target::File(path) => Sink::File {
                path: path.clone(),
                file: open(path)?,
            },
        };
        let (queue, lines) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access log".into())
            .spawn(move || write_lines(sink, lines))?;
        Ok(AccessLog { queue: Some(queue) })
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let Some(queue) = &self.queue else {
            return;
        };
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        match queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => crate::metrics::get().access_log_dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Closes and opens the file again (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(Message::Reopen);
        }
    }
}

enum Sink {
    Stdout,
    File {
        path: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
    },
}

fn open(path: &PathBuf) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(std::io::BufWriter::with_capacity(64 * 1024, file))
}

/// Writes lines as they come, buffered, and flushes at most 100 ms after a
/// line was written: a burst goes out in large blocks, and a quiet log is
/// on disk within moments.
fn write_lines(mut sink: Sink, lines: Receiver<Message>) {
    use std::sync::mpsc::RecvTimeoutError;
    const EVERY: Duration = Duration::from_millis(100);
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    let mut unflushed_since: Option<Instant> = None;
    loop {
        let message = match unflushed_since {
            Some(since) => match lines.recv_timeout(EVERY.saturating_sub(since.elapsed())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match lines.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match message {
            Some(Message::Line(line)) => {
                let written = match &mut sink {
                    Sink::Stdout => stdout.write_all(line.as_bytes()),
                    Sink::File { file, .. } => file.write_all(line.as_bytes()),
                };
                if let Err(error) = written {
                    tracing::warn!(%error, "cannot write the access log");
                }
                unflushed_since.get_or_insert_with(Instant::now);
            }
            Some(Message::Reopen) => {
                flush(&mut sink, &mut stdout);
                unflushed_since = None;
                if let Sink::File { path, file } = &mut sink {
                    match open(path) {
                        Ok(reopened) => {
                            *file = reopened;
                            tracing::info!(path = %path.display(), "access log reopened");
                        }
                        Err(error) => {
                            tracing::error!(path = %path.display(), %error, "cannot reopen the access log; writing to the old file")
                        }
                    }
                }
            }
            None => {}
        }
        if unflushed_since.is_some_and(|since| since.elapsed() >= EVERY) {
            flush(&mut sink, &mut stdout);
            unflushed_since = None;
        }
    }
    flush(&mut sink, &mut stdout);
}

fn flush(sink: &mut Sink, stdout: &mut std::io::BufWriter<std::io::Stdout>) {
    let flushed = match sink {
        Sink::Stdout => stdout.flush(),
        Sink::File { file, .. } => file.flush(),
    };
    if let Err(error) = flushed {
        tracing::warn!(%error, "cannot flush the access log");
    }
}

/// `query` with the value of each parameter in `redact` replaced.
pub fn redact_query(path_and_query: &str, redact: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if redact.iter().any(|r| r == k) => format!("{k}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// Reopens the access log on SIGUSR1.
pub struct ReopenOnSignal(pub AccessLog);

#[async_trait]
impl BackgroundService for ReopenOnSignal {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "cannot handle SIGUSR1; the access log will not reopen");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => self.0.reopen(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Unix time as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Expected values from `date -u -d @SECONDS +%FT%T`.
    fn times_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_795_000_000, 999)), "2026-11-18T11:06:40.999Z");
        assert_eq!(rfc3339(at(4_102_444_799, 0)), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn token_parameters_are_redacted_and_the_rest_kept() {
        let redact = ["access_token".to_string(), "jwt".to_string()];
        assert_eq!(
            redact_query("/a?x=1&access_token=eyJ.x.y&y=2", &redact),
            "/a?x=1&access_token=[redacted]&y=2"
        );
        assert_eq!(redact_query("/a?jwt=t", &redact), "/a?jwt=[redacted]");
        assert_eq!(redact_query("/a", &redact), "/a");
        assert_eq!(redact_query("/a?flag", &redact), "/a?flag");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("off"), Target::Off);
        assert_eq!(Target::parse("stdout"), Target::Stdout);
        assert_eq!(
            Target::parse("/var/log/claimgate/access.log"),
            Target::File("/var/log/claimgate/access.log".into())
        );
    }
}
