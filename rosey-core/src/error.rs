//! Helpers for errors that keep their causes.
//!
//! Rosey's library errors are `thiserror` enums whose `Display` says what failed at their own level and
//! whose [`source`](std::error::Error::source) is the cause (an `io::Error`, a NATS error…). A message
//! for a person prints the whole chain with [`Chain`]; code that must branch on a cause looks it up with
//! [`find_cause`] or [`is_caused_by`].
//!
//! ```
//! use std::io;
//! use rosey_core::error::{Chain, find_cause, is_caused_by};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("cannot read plugins/dice-roller/plugin.toml")]
//! struct ReadError(#[source] io::Error);
//!
//! let err = ReadError(io::Error::new(io::ErrorKind::NotFound, "no such file"));
//! assert_eq!(Chain(&err).to_string(), "cannot read plugins/dice-roller/plugin.toml: no such file");
//! assert!(is_caused_by::<io::Error>(&err));
//! assert_eq!(find_cause::<io::Error>(&err).map(io::Error::kind), Some(io::ErrorKind::NotFound));
//! ```

use std::error::Error;
use std::fmt;

/// A boxed error that can cross threads: the cause type of errors whose cause comes from several
/// libraries (e.g. the NATS client's connect, publish and subscribe errors).
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Displays an error followed by its causes, `top: cause: root cause`.
///
/// A cause whose text the previously printed one already contains is skipped, so an error that also
/// prints its source (as many libraries' errors do) is not repeated. Empty messages are skipped too.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let text = err.to_string();
            if !text.is_empty() && !previous.contains(&text) {
                write!(f, ": {text}")?;
                previous = text;
            }
            cause = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The first error of type `E` in `err`'s chain, `err` itself included.
pub fn find_cause<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cause = err.source();
    }
    None
}

/// Whether an error of type `E` is in `err`'s chain, `err` itself included.
pub fn is_caused_by<E: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    find_cause::<E>(err).is_some()
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let mut layer: Option<Box<Layer>> = None;
        for text in texts.iter().rev() {
            layer = Some(Box::new(Layer { text, source: layer }));
        }
        *layer.unwrap_or_else(|| Box::new(Layer { text: "", source: None }))
    }

    #[test]
    fn chain_prints_every_cause_in_order() {
        assert_eq!(Chain(&chain(&["a", "b", "c"])).to_string(), "a: b: c");
        assert_eq!(Chain(&chain(&["only"])).to_string(), "only");
    }

    #[test]
    fn chain_skips_a_cause_the_previous_message_already_includes() {
        let err = chain(&["cannot start", "IO error: refused", "refused", "deep"]);
        assert_eq!(Chain(&err).to_string(), "cannot start: IO error: refused: deep");
        assert_eq!(Chain(&chain(&["a", "", "b"])).to_string(), "a: b");
    }

    #[test]
    fn causes_are_found_by_type() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let err = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(is_caused_by::<io::Error>(&err));
        assert!(is_caused_by::<Outer>(&err));
        assert!(!is_caused_by::<fmt::Error>(&err));
        assert_eq!(
            find_cause::<io::Error>(&err).map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }
}
