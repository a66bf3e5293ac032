//! The CyTube connector (cargo feature `cytube`), built against frames recorded from a real CyTube 3.86
//! server (`shared/fixtures/cytube/`).
//!
//! So far: the units the connector is made of. [`packet`] reads and writes Engine.IO v4 / socket.io v5
//! text frames; [`text`] turns CyTube's HTML chat into plain text and splits long replies at the
//! channel's limit; [`users`] keeps the user table from CyTube's events; [`ratelimit`] keeps outgoing
//! chat under CyTube's flood limit and obeys `cooldown`. The connection itself, joining, reconnects and
//! the fake server for tests are the next step (see the issue tracker).

pub mod packet;
pub mod ratelimit;
pub mod text;
pub mod users;
