//! Bounded line framing, shared by the host's readers and the SDK: lines longer than the limit are
//! discarded whole without ever being held in memory, and the next line is read as usual.
//!
//! The framer is fed whatever bytes the input has ready (`fill_buf`), says how many it used (to
//! `consume`), and reports each finished line; so the same logic serves blocking and async readers.
//!
//! ```
//! use rosey_plugin::framing::{Framed, LineFramer};
//!
//! let mut framer = LineFramer::new(8);
//! let input = b"short\r\nmuch too long\nok";
//! let (used, framed) = framer.feed(input);
//! assert_eq!((used, framed), (7, Some(Framed::Line)));
//! assert_eq!(framer.line(), b"short");
//! let (used2, framed) = framer.feed(&input[used..]);
//! assert_eq!(framed, Some(Framed::TooLong(13)));
//! let (_, framed) = framer.feed(&input[used + used2..]);
//! assert_eq!(framed, None, "no newline yet");
//! assert_eq!(framer.finish(), Some(Framed::Line), "end of input ends the last line");
//! assert_eq!(framer.line(), b"ok");
//! ```

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// A line is ready in [`LineFramer::line`] (newline and a trailing `\r` removed).
    Line,
    /// A line of this many bytes was over the limit and was discarded.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `max` bytes; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LineFramer {
    line: Vec<u8>,
    discarded: usize,
    max: usize,
    complete: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        Self { line: Vec::new(), discarded: 0, max, complete: false }
    }

    /// The last finished line (valid after [`Framed::Line`]).
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    fn start_line_if_done(&mut self) {
        if self.complete {
            self.line.clear();
            self.discarded = 0;
            self.complete = false;
        }
    }

    fn end_line(&mut self) -> Framed {
        self.complete = true;
        if self.discarded > 0 {
            return Framed::TooLong(self.discarded);
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Framed::Line
    }

    /// Takes bytes ready on the input; returns how many were used and, when a line ended within
    /// them, how. Call again with the rest.
    pub fn feed(&mut self, available: &[u8]) -> (usize, Option<Framed>) {
        self.start_line_if_done();
        let (chunk, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if self.discarded > 0 || self.line.len() + chunk.len() > self.max {
            self.discarded += self.line.len() + chunk.len();
            self.line.clear();
        } else {
            self.line.extend_from_slice(chunk);
        }
        match end {
            Some(used) => (used, Some(self.end_line())),
            None => (available.len(), None),
        }
    }

    /// At end of input: the last line if it had no newline, else `None`.
    pub fn finish(&mut self) -> Option<Framed> {
        self.start_line_if_done();
        if self.line.is_empty() && self.discarded == 0 {
            return None;
        }
        Some(self.end_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes; collects lines (Ok) and discarded lengths (Err).
    fn frame(input: &[u8], max: usize, chunk: usize) -> Vec<Result<String, usize>> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        let mut rest = input;
        let record = |framer: &LineFramer, framed: Framed, out: &mut Vec<_>| match framed {
            Framed::Line => out.push(Ok(String::from_utf8(framer.line().to_vec()).unwrap())),
            Framed::TooLong(n) => out.push(Err(n)),
        };
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(chunk)];
            let (used, framed) = framer.feed(window);
            if let Some(framed) = framed {
                record(&framer, framed, &mut out);
            }
            rest = &rest[used..];
        }
        if let Some(framed) = framer.finish() {
            record(&framer, framed, &mut out);
        }
        out
    }

    #[test]
    fn long_lines_are_discarded_without_losing_the_next_ones_whatever_the_chunking() {
        let input = b"short\r\n0123456789abcdef\nok\n\nlast-without-newline";
        let expected = [Ok("short".into()), Err(16), Ok("ok".into()), Ok("".into()), Err(20)];
        for chunk in [1, 3, 4, 7, 100] {
            assert_eq!(frame(input, 8, chunk), expected, "chunk {chunk}");
        }
        assert_eq!(frame(b"", 8, 4), []);
        assert_eq!(frame(b"a\n", 8, 4), [Ok("a".into())]);
    }
}
