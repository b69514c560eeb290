//! Path normalization, as Istio configures Envoy for each
//! `pathNormalization` level (Istio's "Authorization Policy Normalization"
//! reference): the normalized path is the one policies, routes and the
//! access log read, and the one sent upstream.
//!
//! BASE is Envoy's `normalize_path` (its snapshot of Chromium's path
//! canonicalizer): one pass over the path, which
//! - decodes `%XX` of the unreserved characters (`A-Z a-z 0-9 - . _ ~`),
//!   once: `%252e` stays as sent;
//! - turns `\` into `/`;
//! - resolves `.` and `..` segments, also spelled `%2e`, never above `/`;
//! - escapes what may not stand raw in a path (controls, space, `"`, `#`,
//!   `<`, `>`, `` ` ``, `{`, `|`, `}`, `^`, DEL and every byte >= 0x80);
//! - keeps every other escape as sent, case included (`%2F`, `%5c`);
//! - refuses `%00` (and a raw NUL).
//!
//! MERGE_SLASHES merges runs of `/` after BASE; DECODE_AND_MERGE_SLASHES
//! first decodes `%2F` to `/` and `%5C` to `\` (Envoy's
//! `UNESCAPE_AND_FORWARD`). NONE leaves the path as received, but `%00` is
//! refused at every level, as Istio's reference table says.

use std::borrow::Cow;
use std::fmt;

/// `Settings.pathNormalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub const NAMES: &'static [&'static str] =
        &["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"];

    pub fn parse(name: &str) -> Option<PathNormalization> {
        Some(match name {
            "NONE" => PathNormalization::None,
            "BASE" => PathNormalization::Base,
            "MERGE_SLASHES" => PathNormalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

impl fmt::Display for PathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathNormalization::None => "NONE",
            PathNormalization::Base => "BASE",
            PathNormalization::MergeSlashes => "MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        })
    }
}

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// A NUL, raw or as `%00`.
    Nul,
    /// Bytes that are not UTF-8 under `NONE`, which forwards the path as
    /// received: it could not be judged as it is sent.
    NotUtf8,
}

/// The path (no query) normalized at `level`; borrowed when it is already
/// in normal form, which is the common case and costs one scan.
pub fn normalize(path: &[u8], level: PathNormalization) -> Result<Cow<'_, str>, BadPath> {
    if has_encoded_nul(path) || path.contains(&0) {
        return Err(BadPath::Nul);
    }
    if level == PathNormalization::None || is_normal(path, level) {
        return std::str::from_utf8(path)
            .map(Cow::Borrowed)
            .map_err(|_| BadPath::NotUtf8);
    }
    let decoded;
    let input = if level == PathNormalization::DecodeAndMergeSlashes {
        decoded = decode_slashes(path);
        &decoded
    } else {
        path
    };
    let mut out = canonical(input);
    if level != PathNormalization::Base {
        merge_slashes(&mut out);
    }
    // `canonical` writes ASCII only: every other byte is escaped.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_default()))
}

fn has_encoded_nul(path: &[u8]) -> bool {
    path.windows(3).any(|w| w == b"%00")
}

/// Whether `path` would come out of `normalize` unchanged: starts with
/// `/`, only plain path characters, no `%`, no dot segment, and (when
/// slashes are merged) no `//`.
fn is_normal(bytes: &[u8], level: PathNormalization) -> bool {
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let merge = level != PathNormalization::Base;
    let mut previous = b'/';
    for (i, &b) in bytes.iter().enumerate() {
        match class(b) {
            Class::Plain => {}
            Class::Dot => {
                if previous == b'/' && is_dot_segment(&bytes[i..]) {
                    return false;
                }
            }
            Class::Slash if merge && previous == b'/' && i > 0 => return false,
            Class::Slash => {}
            _ => return false,
        }
        previous = b;
    }
    true
}

/// `.` or `..` up to the next `/` or the end.
fn is_dot_segment(rest: &[u8]) -> bool {
    let segment = rest.split(|&b| b == b'/').next().unwrap_or_default();
    segment == b"." || segment == b".."
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as it is.
    Plain,
    Slash,
    Dot,
    Backslash,
    Percent,
    /// Written as `%XX`.
    Escape,
}

/// Chromium's path table, as Envoy's snapshot has it.
fn class(b: u8) -> Class {
    match b {
        b'/' => Class::Slash,
        b'.' => Class::Dot,
        b'\\' => Class::Backslash,
        b'%' => Class::Percent,
        0..=0x20 | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'|' | b'}' | b'^' => {
            Class::Escape
        }
        0x7f..=0xff => Class::Escape,
        _ => Class::Plain,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte a `%XX` at the start of `s` stands for.
fn decode_escape(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', hi, lo, ..] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

/// The length of a dot at the start of `s`: `.` is 1, `%2e` is 3, else 0.
fn dot_len(s: &[u8]) -> usize {
    match s {
        [b'.', ..] => 1,
        [b'%', b'2', b'e' | b'E', ..] => 3,
        _ => 0,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\`, nothing else.
fn decode_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match decode_escape(&path[i..]) {
            Some(slash @ (b'/' | b'\\')) => {
                out.push(slash);
                i += 3;
            }
            _ => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    out
}

/// What a dot segment does.
enum Dots {
    /// A file name that happens to start with a dot.
    Name,
    /// `.`: stay; consumes this many input bytes after the first dot.
    Current(usize),
    /// `..`: up one; consumes this many input bytes after the first dot.
    Up(usize),
}

/// Looks at what follows a dot that starts a segment (`after` begins right
/// after it).
fn classify_after_dot(after: &[u8]) -> Dots {
    match after.first() {
        None => return Dots::Current(0),
        Some(&b) if is_slash(b) => return Dots::Current(1),
        _ => {}
    }
    let second = dot_len(after);
    if second > 0 {
        match after.get(second) {
            None => return Dots::Up(second),
            Some(&b) if is_slash(b) => return Dots::Up(second + 1),
            _ => {}
        }
    }
    Dots::Name
}

/// Drops the last segment of `out` (which ends with `/`), never the root.
fn back_up(out: &mut Vec<u8>) {
    if out.len() <= 1 {
        return;
    }
    let before_trailing = &out[..out.len() - 1];
    let keep = before_trailing
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(1, |p| p + 1);
    out.truncate(keep);
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Envoy's `normalize_path` (Chromium's `CanonicalizePath`) on a path
/// without NUL.
fn canonical(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    // Where the last `%` that began no escape was written.
    let mut stray_percent = None;
    if path.first().is_none_or(|&b| !is_slash(b)) {
        out.push(b'/');
    }
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let dot = dot_len(&path[i..]);
        if dot > 0 {
            i += dot;
            if out.last() != Some(&b'/') {
                out.push(b'.');
                continue;
            }
            match classify_after_dot(&path[i..]) {
                Dots::Name => out.push(b'.'),
                Dots::Current(consumed) => i += consumed,
                Dots::Up(consumed) => {
                    back_up(&mut out);
                    i += consumed;
                }
            }
            continue;
        }
        match class(b) {
            Class::Plain | Class::Slash | Class::Dot => out.push(b),
            Class::Backslash => out.push(b'/'),
            Class::Escape => push_escaped(&mut out, b),
            Class::Percent => match decode_escape(&path[i..]) {
                Some(decoded) if is_unreserved(decoded) => {
                    out.push(decoded);
                    i += 3;
                    if let Some(at) = stray_percent {
                        escape_nested(&mut out, at, path.get(i).copied());
                    }
                    continue;
                }
                Some(_) => {
                    out.extend_from_slice(&path[i..i + 3]);
                    i += 3;
                    continue;
                }
                None => {
                    stray_percent = Some(out.len());
                    out.push(b'%');
                }
            },
        }
        i += 1;
    }
    out
}

/// Chromium's guard against double decoding: a stray `%` followed by what
/// was just decoded (and the next input byte) must not form an escape in
/// the output (`%%30%30` would become `%00` for the upstream). When it
/// would, that `%` becomes `%25`.
fn escape_nested(out: &mut Vec<u8>, at: usize, next: Option<u8>) {
    // `..` may have cut the output back past that `%`: nothing to guard.
    let tail = match out.len().saturating_sub(at) {
        2 => match next {
            Some(n) if n.is_ascii() => [out[at + 1], n],
            _ => return,
        },
        3 => [out[at + 1], out[at + 2]],
        _ => return,
    };
    if hex_value(tail[0]).is_some() && hex_value(tail[1]).is_some() {
        out.splice(at + 1..at + 1, *b"25");
    }
}

fn merge_slashes(path: &mut Vec<u8>) {
    path.dedup_by(|b, previous| *b == b'/' && *previous == b'/');
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};

    const NONE: PathNormalization = PathNormalization::None;

    /// Istio's normalization reference and Envoy's path tests, one row per
    /// case: the input, then what NONE, BASE, MERGE_SLASHES and
    /// DECODE_AND_MERGE_SLASHES make of it (`None`: refused with 400).
    const TABLE: &[(&str, [Option<&str>; 4])] = &[
        // Already normal: unchanged everywhere.
        ("/", [Some("/"), Some("/"), Some("/"), Some("/")]),
        (
            "/a/b.c",
            [
                Some("/a/b.c"),
                Some("/a/b.c"),
                Some("/a/b.c"),
                Some("/a/b.c"),
            ],
        ),
        // Single percent-encoded characters: unreserved ones decoded once.
        (
            "/some%2fdata/%61%62%63",
            [
                Some("/some%2fdata/%61%62%63"),
                Some("/some%2fdata/abc"),
                Some("/some%2fdata/abc"),
                Some("/some/data/abc"),
            ],
        ),
        (
            "/%2D%30%39%41%5A%5F%61%7A%7E",
            [
                Some("/%2D%30%39%41%5A%5F%61%7A%7E"),
                Some("/-09AZ_az~"),
                Some("/-09AZ_az~"),
                Some("/-09AZ_az~"),
            ],
        ),
        (
            "/%61dmin",
            [
                Some("/%61dmin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/a%252e",
            [
                Some("/a%252e"),
                Some("/a%252e"),
                Some("/a%252e"),
                Some("/a%252e"),
            ],
        ),
        (
            "/a%20b%3F",
            [
                Some("/a%20b%3F"),
                Some("/a%20b%3F"),
                Some("/a%20b%3F"),
                Some("/a%20b%3F"),
            ],
        ),
        (
            "/a%zz%4",
            [
                Some("/a%zz%4"),
                Some("/a%zz%4"),
                Some("/a%zz%4"),
                Some("/a%zz%4"),
            ],
        ),
        // %00: always refused.
        ("/admin%00", [None, None, None, None]),
        ("/%00/admin", [None, None, None, None]),
        // Backslashes.
        (
            "/some\\data",
            [
                Some("/some\\data"),
                Some("/some/data"),
                Some("/some/data"),
                Some("/some/data"),
            ],
        ),
        (
            "\\admin",
            [
                Some("\\admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/a%5cb",
            [Some("/a%5cb"), Some("/a%5cb"), Some("/a%5cb"), Some("/a/b")],
        ),
        // Slashes.
        (
            "/some//data///abc",
            [
                Some("/some//data///abc"),
                Some("/some//data///abc"),
                Some("/some/data/abc"),
                Some("/some/data/abc"),
            ],
        ),
        (
            "//admin",
            [
                Some("//admin"),
                Some("//admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/x/..%2fadmin",
            [
                Some("/x/..%2fadmin"),
                Some("/x/..%2fadmin"),
                Some("/x/..%2fadmin"),
                Some("/admin"),
            ],
        ),
        (
            "/a%2F%2Fb",
            [
                Some("/a%2F%2Fb"),
                Some("/a%2F%2Fb"),
                Some("/a%2F%2Fb"),
                Some("/a/b"),
            ],
        ),
        // Dot segments, also encoded.
        (
            "/public/./data/abc/../xyz",
            [
                Some("/public/./data/abc/../xyz"),
                Some("/public/data/xyz"),
                Some("/public/data/xyz"),
                Some("/public/data/xyz"),
            ],
        ),
        (
            "/x/../admin",
            [
                Some("/x/../admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/./admin",
            [
                Some("/./admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/%2e/admin",
            [
                Some("/%2e/admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/public/%2E%2e/admin",
            [
                Some("/public/%2E%2e/admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/public/.%2e/admin",
            [
                Some("/public/.%2e/admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        (
            "/../../admin",
            [
                Some("/../../admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        ("/a/..", [Some("/a/.."), Some("/"), Some("/"), Some("/")]),
        (
            "/a/.",
            [Some("/a/."), Some("/a/"), Some("/a/"), Some("/a/")],
        ),
        (
            "/a/..\\b",
            [Some("/a/..\\b"), Some("/b"), Some("/b"), Some("/b")],
        ),
        (
            "/a/...",
            [
                Some("/a/..."),
                Some("/a/..."),
                Some("/a/..."),
                Some("/a/..."),
            ],
        ),
        (
            "/a/.b/..c",
            [
                Some("/a/.b/..c"),
                Some("/a/.b/..c"),
                Some("/a/.b/..c"),
                Some("/a/.b/..c"),
            ],
        ),
        (
            "/a.%2e/b",
            [
                Some("/a.%2e/b"),
                Some("/a../b"),
                Some("/a../b"),
                Some("/a../b"),
            ],
        ),
        (
            "//../admin",
            [
                Some("//../admin"),
                Some("/admin"),
                Some("/admin"),
                Some("/admin"),
            ],
        ),
        // No double decoding through a stray `%`.
        (
            "/%%30%30",
            [
                Some("/%%30%30"),
                Some("/%2500"),
                Some("/%2500"),
                Some("/%2500"),
            ],
        ),
        (
            "/%%32%65%%32%65/admin",
            [
                Some("/%%32%65%%32%65/admin"),
                Some("/%252e%252e/admin"),
                Some("/%252e%252e/admin"),
                Some("/%252e%252e/admin"),
            ],
        ),
        (
            "/%%34%31",
            [
                Some("/%%34%31"),
                Some("/%2541"),
                Some("/%2541"),
                Some("/%2541"),
            ],
        ),
        // A `..` that cuts the output back past a stray `%` (Envoy's
        // snapshot keeps remembering where that `%` was, and so do we).
        (
            "/ab%/../%61",
            [Some("/ab%/../%61"), Some("/a"), Some("/a"), Some("/a")],
        ),
        (
            "/ab%/../xyz%61b",
            [
                Some("/ab%/../xyz%61b"),
                Some("/xyz25ab"),
                Some("/xyz25ab"),
                Some("/xyz25ab"),
            ],
        ),
        // Characters escaped in a canonical path.
        (
            "/a\"b<c>{d}|^`",
            [
                Some("/a\"b<c>{d}|^`"),
                Some("/a%22b%3Cc%3E%7Bd%7D%7C%5E%60"),
                Some("/a%22b%3Cc%3E%7Bd%7D%7C%5E%60"),
                Some("/a%22b%3Cc%3E%7Bd%7D%7C%5E%60"),
            ],
        ),
        (
            "/caf\u{e9}",
            [
                Some("/caf\u{e9}"),
                Some("/caf%C3%A9"),
                Some("/caf%C3%A9"),
                Some("/caf%C3%A9"),
            ],
        ),
        // A path without its leading slash gets one.
        (
            "a/b",
            [Some("a/b"), Some("/a/b"), Some("/a/b"), Some("/a/b")],
        ),
    ];

    #[test]
    fn every_level_normalizes_as_istio_documents() {
        for (input, expected) in TABLE {
            for (level, want) in [NONE, Base, MergeSlashes, DecodeAndMergeSlashes]
                .into_iter()
                .zip(expected)
            {
                let got = normalize(input.as_bytes(), level).ok();
                assert_eq!(got.as_deref(), *want, "{level} of {input:?}");
            }
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for (input, _) in TABLE {
            for level in [Base, MergeSlashes, DecodeAndMergeSlashes] {
                if let Ok(once) = normalize(input.as_bytes(), level) {
                    let twice = normalize(once.as_bytes(), level).map(Cow::into_owned);
                    // Only decoding slashes may find new work in its own output.
                    if level != DecodeAndMergeSlashes {
                        assert_eq!(twice.as_deref(), Ok(&*once), "{level} of {input:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_normal_path_is_not_copied() {
        for path in ["/", "/headers", "/a/b-c_d~e/f.json", "/a//b"] {
            assert!(
                matches!(normalize(path.as_bytes(), Base), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
        assert!(matches!(
            normalize(b"/a//b", MergeSlashes),
            Ok(Cow::Owned(_))
        ));
        assert_eq!(normalize(b"/caf\xe9", NONE), Err(BadPath::NotUtf8));
        assert_eq!(normalize(b"/caf\xe9", Base).as_deref(), Ok("/caf%E9"));
    }

    #[test]
    fn level_names_are_istios() {
        for name in PathNormalization::NAMES {
            let level = PathNormalization::parse(name).unwrap();
            assert_eq!(level.to_string(), *name);
        }
        assert_eq!(PathNormalization::parse("base"), None);
    }
}
