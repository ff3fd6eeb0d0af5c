//! The `eventfeed` binary.

fn main() {
    eprintln!("eventfeed: the event feed is not wired up yet");
    std::process::exit(1);
}
