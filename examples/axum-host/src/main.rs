//! The lobu example host (work in progress).

fn main() {
    println!("lobu example host: not built yet");
}
