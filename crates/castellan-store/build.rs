// `sqlx::migrate!` embeds the migration files at compile time, so a changed
// or added migration must trigger a rebuild of this crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
