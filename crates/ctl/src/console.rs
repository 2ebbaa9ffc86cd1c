//! Writing to stdout without panicking when the reader went away
//! (`ctl jobs list | head -1`): a closed pipe ends the command quietly.

use std::io::Write;

use crate::error::AlreadyReported;

/// Exit code after stdout was closed by its reader (128 + SIGPIPE, as shells report it).
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Writes `text` and a newline to stdout and flushes, so that a live watch
/// shows each event as it happens.
pub fn line(text: impl AsRef<str>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{}", text.as_ref()).and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(AlreadyReported {
            code: EXIT_BROKEN_PIPE,
        }
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes `text` as is (it should end in a newline) to stdout; see [`line()`].
pub fn text(text: impl AsRef<str>) -> anyhow::Result<()> {
    let text = text.as_ref();
    line(text.strip_suffix('\n').unwrap_or(text))
}
