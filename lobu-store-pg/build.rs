// `sqlx::migrate!` embeds ./migrations at compile time; without this, adding a migration
// file would not rebuild the crate on stable Rust (see sqlx's `migrate!` docs).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
