//! The errors `ctl` tells apart, because each maps to its own exit code
//! (see [`exit_code`]): bad input, an unreachable server, a server's refusal.

use std::fmt;

/// Exit code of a command that ran and did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a command whose operation failed: a job ended FAILED or
/// CANCELLED, an image could not be explained, weights did not fit, a server
/// in `ctl status` was unreachable, or any other error.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad input: unknown flags or values (clap uses 2 as well), a
/// bad spec file, an unreadable weights file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a server could not be reached at all.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code when a server answered with an error status.
pub const EXIT_STATUS: u8 = 4;
/// Exit code after Ctrl-C stopped a watch (the job keeps running).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Input the user can fix: a bad flag value, spec file or model reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    message: String,
}

impl InputError {
    /// An input error with this (lowercase, specific) message.
    pub fn new(message: impl Into<String>) -> Self {
        InputError {
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// A server that could not be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Which server: `coordinator` or `explainer`.
    pub server: &'static str,
    /// The address tried.
    pub address: String,
    /// The innermost cause, e.g. `Connection refused (os error 111)`.
    pub reason: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the {} at {}: {} — is `camshaft up` running?",
            self.server, self.address, self.reason
        )
    }
}

impl std::error::Error for Unreachable {}

/// A call that the server answered with an error status.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Which server: `coordinator` or `explainer`.
    pub server: &'static str,
    /// The RPC, e.g. `GetJob`.
    pub method: &'static str,
    /// The status code.
    pub code: tonic::Code,
    /// The status message.
    pub message: String,
}

impl CallError {
    /// Wraps `status`, the answer of `server` to `method`.
    pub fn new(server: &'static str, method: &'static str, status: &tonic::Status) -> Self {
        CallError {
            server,
            method,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// A closure for `map_err` that wraps a status into an [`anyhow::Error`].
    pub fn wrap(
        server: &'static str,
        method: &'static str,
    ) -> impl FnOnce(tonic::Status) -> anyhow::Error {
        move |status| CallError::new(server, method, &status).into()
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on the {} failed: {}",
            self.method,
            self.server,
            camshaft_proto::code_name(self.code)
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

/// A command whose operation failed after its output was already printed
/// (e.g. a job that ended FAILED): `main` prints nothing more for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyReported {
    /// The exit code to end with.
    pub code: u8,
}

impl fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed (exit code {})", self.code)
    }
}

impl std::error::Error for AlreadyReported {}

/// The innermost message of an error's source chain (transport errors wrap
/// the useful part, e.g. `Connection refused`, several levels deep).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The exit code for an error returned by [`crate::run`].
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(reported) = cause.downcast_ref::<AlreadyReported>() {
            return reported.code;
        }
        if cause.is::<InputError>() || cause.is::<clap::Error>() {
            return EXIT_USAGE;
        }
        if cause.is::<Unreachable>() {
            return EXIT_UNREACHABLE;
        }
        if cause.is::<CallError>() {
            return EXIT_STATUS;
        }
    }
    EXIT_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let unreachable = Unreachable {
            server: "coordinator",
            address: "http://127.0.0.1:50051".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the coordinator at http://127.0.0.1:50051: \
             Connection refused (os error 111) — is `camshaft up` running?"
        );
        let call = CallError::new(
            "coordinator",
            "GetJob",
            &tonic::Status::not_found("no job j-9"),
        );
        assert_eq!(
            call.to_string(),
            "GetJob on the coordinator failed: NOT_FOUND: no job j-9"
        );
    }

    #[test]
    fn exit_codes_follow_the_error_kind() {
        let input = anyhow::Error::from(InputError::new("bad")).context("reading spec");
        assert_eq!(exit_code(&input), EXIT_USAGE);
        let call: anyhow::Error =
            CallError::new("explainer", "Explain", &tonic::Status::internal("x")).into();
        assert_eq!(exit_code(&call), EXIT_STATUS);
        let reported: anyhow::Error = AlreadyReported { code: 1 }.into();
        assert_eq!(exit_code(&reported), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), EXIT_FAILED);
    }
}
