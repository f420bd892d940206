//! The `clustermesh` command (work in progress).

fn main() {
    eprintln!("clustermesh: no commands yet");
    std::process::exit(64);
}
