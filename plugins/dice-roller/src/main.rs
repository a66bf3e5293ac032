//! The bundled dice-roller plugin: `!roll [N]d<S>[+/-M]` and `!flip`.

mod dice;

use std::process::ExitCode;

use rosey_plugin::{Plugin, Response};

fn main() -> ExitCode {
    let mut rng = dice::Rng::from_entropy();
    let mut coin = dice::Rng::from_entropy();
    Plugin::new("dice-roller", env!("CARGO_PKG_VERSION"))
        .command("roll", move |cmd| Ok(Response::reply(dice::roll(cmd.args, &mut rng))))
        .command("flip", move |_| Ok(Response::reply(dice::flip(&mut coin))))
        .run()
}
