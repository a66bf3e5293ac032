//! Reading bounded lines from async readers, with the framing shared with the plugin SDK.

use rosey_plugin::framing::{Framed, LineFramer};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Reads the next line into `framer` (see [`LineFramer::line`]); `None` at end of input. A line over
/// the framer's limit is discarded whole and reported as [`Framed::TooLong`].
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    framer: &mut LineFramer,
) -> std::io::Result<Option<Framed>> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(framer.finish());
        }
        let (used, framed) = framer.feed(available);
        reader.consume(used);
        if framed.is_some() {
            return Ok(framed);
        }
    }
}
