//! Writing to stdout and stderr without `println!`'s panic when the reader has gone
//! (`trailcopy failures … | head` closes the pipe; Rust ignores SIGPIPE, so the write fails
//! with EPIPE). After the first failed write that stream stays quiet; the command goes on and
//! exits with its own status.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

fn write_to(gone: &AtomicBool, out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    if gone.load(Ordering::Relaxed) {
        return Ok(());
    }
    let result = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if result.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
    result
}

/// Prints `text` (with its own newlines) on stdout.
pub fn print_out(text: &str) {
    if let Err(e) = write_to(&STDOUT_GONE, &mut std::io::stdout().lock(), text)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        print_err(&format!("error: cannot write to stdout: {e}\n"));
    }
}

/// Prints `text` on stderr; a closed stderr is ignored.
pub fn print_err(text: &str) {
    let _ = write_to(&STDERR_GONE, &mut std::io::stderr().lock(), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed(usize);
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0 += 1;
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_silences_the_stream() {
        let gone = AtomicBool::new(false);
        let mut w = Closed(0);
        assert!(write_to(&gone, &mut w, "a\n").is_err());
        assert!(write_to(&gone, &mut w, "b\n").is_ok(), "later writes are dropped quietly");
        assert_eq!(w.0, 1, "nothing is written after the pipe closed");
    }
}
