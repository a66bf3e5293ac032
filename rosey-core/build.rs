//! Rebuilds rosey-core when a migration is added: `sqlx::migrate!` embeds `migrations/` at compile
//! time, and on stable Rust cargo would not notice a new file there by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
