//! A plugin's stderr, logged line by line under its name: rate limited, long lines cut to their
//! first [`MAX_STDERR_LINE`] bytes with a note of how much was cut, and a summary of dropped lines
//! while suppressing.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::Instant;

/// Longest part of a stderr line that is logged; the rest of the line is counted and dropped.
pub(crate) const MAX_STDERR_LINE: usize = 16 * 1024;
/// Stderr lines logged per second and plugin instance before the rest are counted and summarized.
const LINES_PER_SECOND: u32 = 100;
/// The rate-limit window; a summary of dropped lines follows each window that dropped any, at the
/// latest when the window ends, whether or not the plugin writes again.
const WINDOW: Duration = Duration::from_secs(1);

/// Splits a byte stream into lines, keeping the first `max` bytes of each. Its state lives here,
/// not in the future of [`next`](Self::next), so a read abandoned in a `select!` loses nothing.
#[derive(Debug)]
struct LineReader {
    line: Vec<u8>,
    cut: usize,
    max: usize,
    complete: bool,
}

impl LineReader {
    fn new(max: usize) -> Self {
        Self { line: Vec::new(), cut: 0, max, complete: false }
    }

    /// Reads up to the end of the next line; `false` at the end of input. The line's first bytes
    /// are then in `self.line`, and `self.cut` says how many more it had.
    async fn next<R: AsyncBufRead + Unpin>(&mut self, reader: &mut R) -> std::io::Result<bool> {
        if self.complete {
            self.line.clear();
            self.cut = 0;
            self.complete = false;
        }
        loop {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                self.complete = true;
                return Ok(!self.line.is_empty() || self.cut > 0);
            }
            let (chunk, used, ends) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let keep = chunk.len().min(self.max - self.line.len());
            self.line.extend_from_slice(&chunk[..keep]);
            self.cut += chunk.len() - keep;
            reader.consume(used);
            if ends {
                if self.cut == 0 && self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                self.complete = true;
                return Ok(true);
            }
        }
    }
}

/// Logs the child's stderr under the plugin's name (target `rosey::plugin::stderr`), at most
/// [`LINES_PER_SECOND`] lines a second; the rest are counted and summarized once a second while
/// suppressing. Returns at the end of the stream.
pub(crate) async fn log_stderr<R: AsyncBufRead + Unpin>(
    mut stderr: R,
    plugin: String,
    pid: Option<u32>,
) {
    let mut reader = LineReader::new(MAX_STDERR_LINE);
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    let summary = |suppressed: u64| {
        tracing::warn!(message = "plugin stderr lines dropped (rate limit)", plugin = %plugin, pid, suppressed);
    };
    loop {
        let more = tokio::select! {
            more = reader.next(&mut stderr) => more,
            _ = tokio::time::sleep_until(window + WINDOW), if suppressed > 0 => {
                summary(suppressed);
                window = Instant::now();
                logged = 0;
                suppressed = 0;
                continue;
            }
        };
        if !matches!(more, Ok(true)) {
            break;
        }
        if window.elapsed() >= WINDOW {
            if suppressed > 0 {
                summary(suppressed);
            }
            window = Instant::now();
            logged = 0;
            suppressed = 0;
        }
        if logged < LINES_PER_SECOND {
            logged += 1;
            let text = String::from_utf8_lossy(&reader.line);
            if reader.cut > 0 {
                let cut = reader.cut;
                tracing::info!(target: "rosey::plugin::stderr", plugin = %plugin, pid, cut_bytes = cut, "{text} <{cut} more bytes cut>");
            } else {
                tracing::info!(target: "rosey::plugin::stderr", plugin = %plugin, pid, "{text}");
            }
        } else {
            suppressed += 1;
        }
    }
    if suppressed > 0 {
        summary(suppressed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, usize)> {
        let mut reader = LineReader::new(max);
        let mut input = tokio::io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        while reader.next(&mut input).await.unwrap() {
            out.push((String::from_utf8_lossy(&reader.line).into_owned(), reader.cut));
        }
        out
    }

    #[tokio::test]
    async fn a_long_line_keeps_its_first_bytes_and_counts_the_rest() {
        let got = lines(b"short\r\n0123456789abcdef\nlast", 10).await;
        assert_eq!(
            got,
            [("short".to_owned(), 0), ("0123456789".to_owned(), 6), ("last".to_owned(), 0)]
        );
        assert!(lines(b"", 10).await.is_empty());
    }
}
