//! The `camshaft` binary refuses bad flags, bad config files and taken ports
//! with a message that says what is wrong, before it serves anything.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Output};

fn camshaft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camshaft"))
        .args(args)
        .output()
        .unwrap()
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_and_config_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let err = refused(&camshaft(&["up", "--data-dir", data, "--workers", "0"]));
    assert!(err.contains("--workers"), "{err}");

    let config = dir.path().join("camshaft.toml");
    std::fs::write(&config, "[coordinator]\nlease_ttl_msec = 5\n").unwrap();
    let err = refused(&camshaft(&[
        "coordinator",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data,
    ]));
    assert!(err.contains("lease_ttl_msec"), "{err}");

    let err = refused(&camshaft(&[
        "up",
        "--data-dir",
        data,
        "--coordinator-addr",
        "not-an-address",
    ]));
    assert!(err.contains("not-an-address"), "{err}");
}

#[test]
fn a_taken_port_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&camshaft(&[
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--coordinator-addr",
        &addr,
        "--explainer-addr",
        "127.0.0.1:0",
    ]));
    assert!(err.contains(&addr) && err.contains("coordinator"), "{err}");
}
