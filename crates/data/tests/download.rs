//! Downloads against a real HTTP server on 127.0.0.1 (std::net, written here):
//! resume after a dropped connection, restart when Range is ignored, checksum
//! failures that leave nothing behind, offline errors, and skipping work that
//! is already done.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use camshaft_data::{Checksum, Error, RemoteArchive, SplitMix64, fetch_from};
use md5::{Digest, Md5};

#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Send the headers and half the body of the first response, then hang up.
    drop_first_halfway: bool,
    /// Answer every request with the whole file (200), Range or not.
    ignore_range: bool,
    /// Serve bytes that differ from the real file (same length).
    wrong_bytes: bool,
    /// Answer 404 to everything.
    not_found: bool,
}

struct TestServer {
    base: String,
    /// The Range header of every request received, in order.
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl TestServer {
    fn start(file: Vec<u8>, behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/mirror", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ranges);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let first = seen.lock().unwrap().is_empty();
                let range = read_request(&stream);
                seen.lock().unwrap().push(range.clone());
                let _ = respond(stream, &file, range.as_deref(), behaviour, first);
            }
        });
        TestServer { base, ranges }
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

/// Reads the request head and returns its Range header, if any.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return range;
        }
        if let Some((_, value)) = line
            .split_once(':')
            .filter(|(name, _)| name.eq_ignore_ascii_case("range"))
        {
            range = Some(value.trim().to_string());
        }
    }
}

fn respond(
    mut stream: TcpStream,
    file: &[u8],
    range: Option<&str>,
    behaviour: Behaviour,
    first: bool,
) -> std::io::Result<()> {
    if behaviour.not_found {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let body: Vec<u8> = if behaviour.wrong_bytes {
        file.iter().map(|b| b ^ 0xA5).collect()
    } else {
        file.to_vec()
    };
    let start = range
        .filter(|_| !behaviour.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let (head, content) = match start {
        Some(start) if start >= body.len() => (
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body[..0],
        ),
        Some(start) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - start
            ),
            &body[start..],
        ),
        None => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body[..],
        ),
    };
    stream.write_all(head.as_bytes())?;
    if behaviour.drop_first_halfway && first {
        stream.write_all(&content[..content.len() / 2])?;
        stream.flush()?;
        stream.shutdown(Shutdown::Both)?;
        return Ok(());
    }
    stream.write_all(content)?;
    stream.flush()
}

/// A tar.gz holding `toy/hello.txt` and `toy/data/noise.bin` (300 kB of
/// incompressible bytes, so "half-way" is well inside the body).
fn toy_archive() -> (Vec<u8>, Vec<u8>) {
    let mut rng = SplitMix64::new(99);
    let noise: Vec<u8> = (0..300_000).map(|_| rng.next_u64() as u8).collect();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in [
        ("toy/hello.txt", &b"hello, camshaft\n"[..]),
        ("toy/data/noise.bin", &noise[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data).unwrap();
    }
    let tgz = builder.into_inner().unwrap().finish().unwrap();
    (tgz, noise)
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn toy<'a>(checksum: &'a str) -> RemoteArchive<'a> {
    RemoteArchive {
        name: "toy",
        url: "https://data.invalid/datasets/toy.tgz",
        checksum: Some(Checksum::Md5(checksum)),
        size: None,
        extracted_dir: "toy",
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_extracted(dest: &Path, noise: &[u8]) {
    assert_eq!(
        std::fs::read_to_string(dest.join("hello.txt")).unwrap(),
        "hello, camshaft\n"
    );
    assert_eq!(std::fs::read(dest.join("data/noise.bin")).unwrap(), noise);
}

#[test]
fn fetch_downloads_verifies_extracts_and_then_skips() {
    let (tgz, noise) = toy_archive();
    let md5 = md5_hex(&tgz);
    let server = TestServer::start(tgz, Behaviour::default());
    let cache = tempfile::tempdir().unwrap();

    let dest = fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap();
    assert_eq!(dest, cache.path().join("toy"));
    assert_extracted(&dest, &noise);
    assert_eq!(server.ranges(), [None]);
    // Only the archive and the extracted directory: no .partial, no temp dirs.
    assert_eq!(entries(cache.path()), ["toy", "toy.tgz"]);

    // Complete: no request at all.
    fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap();
    assert_eq!(server.ranges().len(), 1);

    // Extraction removed: redone from the verified archive, still no request.
    std::fs::remove_dir_all(&dest).unwrap();
    let dest = fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap();
    assert_extracted(&dest, &noise);
    assert_eq!(server.ranges().len(), 1);
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let (tgz, noise) = toy_archive();
    let md5 = md5_hex(&tgz);
    let half = tgz.len() / 2;
    let server = TestServer::start(
        tgz,
        Behaviour {
            drop_first_halfway: true,
            ..Behaviour::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let dest = fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap();
    assert_extracted(&dest, &noise);
    assert_eq!(server.ranges(), [None, Some(format!("bytes={half}-"))]);
    assert_eq!(entries(cache.path()), ["toy", "toy.tgz"]);
}

#[test]
fn a_server_that_ignores_range_gets_a_clean_restart() {
    let (tgz, noise) = toy_archive();
    let md5 = md5_hex(&tgz);
    let server = TestServer::start(
        tgz,
        Behaviour {
            drop_first_halfway: true,
            ignore_range: true,
            ..Behaviour::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let dest = fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap();
    // The second request asked for a range, got the whole file, and the partial
    // was truncated instead of appended to (else the checksum would fail).
    assert_eq!(server.ranges().len(), 2);
    assert!(server.ranges()[1].is_some());
    assert_extracted(&dest, &noise);
}

#[test]
fn wrong_bytes_fail_the_checksum_and_leave_nothing() {
    let (tgz, _) = toy_archive();
    let md5 = md5_hex(&tgz);
    let server = TestServer::start(
        tgz,
        Behaviour {
            wrong_bytes: true,
            ..Behaviour::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_from(&toy(&md5), Some(&server.base), cache.path()).unwrap_err();
    let msg = err.to_string();
    match &err {
        Error::Checksum {
            algorithm,
            expected,
            actual,
            url,
            ..
        } => {
            assert_eq!(*algorithm, "md5");
            assert_eq!(expected, &md5);
            assert_ne!(actual, &md5);
            assert_eq!(url, &format!("{}/toy.tgz", server.base));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(msg.contains("/mirror/toy.tgz"), "{msg}");
    assert!(
        entries(cache.path()).is_empty(),
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn offline_errors_name_the_url_and_where_to_put_the_file() {
    let (tgz, noise) = toy_archive();
    let md5 = md5_hex(&tgz);
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = format!("http://127.0.0.1:{port}/mirror");
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_from(&toy(&md5), Some(&mirror), cache.path()).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{mirror}/toy.tgz")), "{msg}");
    let by_hand = cache.path().join("toy.tgz");
    assert!(msg.contains(&by_hand.display().to_string()), "{msg}");

    // Placing the file there by hand is enough, still offline.
    std::fs::write(&by_hand, &tgz).unwrap();
    let dest = fetch_from(&toy(&md5), Some(&mirror), cache.path()).unwrap();
    assert_extracted(&dest, &noise);
}

#[test]
fn http_errors_are_reported_without_retrying() {
    let server = TestServer::start(
        Vec::new(),
        Behaviour {
            not_found: true,
            ..Behaviour::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_from(&toy("00"), Some(&server.base), cache.path()).unwrap_err();
    assert!(err.to_string().contains("http 404"), "{err}");
    assert_eq!(server.ranges().len(), 1);
}

#[test]
fn an_archive_without_the_expected_directory_is_an_error() {
    let (tgz, _) = toy_archive();
    let md5 = md5_hex(&tgz);
    let server = TestServer::start(tgz, Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let archive = RemoteArchive {
        extracted_dir: "elsewhere",
        ..toy(&md5)
    };
    let err = fetch_from(&archive, Some(&server.base), cache.path()).unwrap_err();
    assert!(matches!(err, Error::Extract { .. }), "{err:?}");
    assert!(err.to_string().contains("elsewhere"), "{err}");
    // The verified archive stays; no half extraction is left.
    assert_eq!(entries(cache.path()), ["toy.tgz"]);
}
