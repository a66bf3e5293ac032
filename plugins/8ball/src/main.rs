//! The bundled 8ball plugin: `!8ball <question>`.

mod eightball;

use std::process::ExitCode;
use std::time::Instant;

use rosey_plugin::{Plugin, Response};

fn main() -> ExitCode {
    let mut ball = eightball::Ball::new();
    Plugin::new("8ball", env!("CARGO_PKG_VERSION"))
        .command("8ball", move |cmd| {
            Ok(Response::reply(ball.ask(cmd.user, cmd.args, Instant::now())))
        })
        .run()
}
