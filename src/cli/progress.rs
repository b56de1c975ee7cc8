//! Progress on a terminal for long client work: a bar while a file of
//! addresses is read, and a running clock while one big D-Bus call (a
//! BanMany of a million, an import) is with the daemon. Nothing is shown
//! when stderr is not a terminal: scripts and logs get the final line only.
//!
//! It draws on stderr; it must not print results, which go to stdout.

use std::cell::Cell;
use std::io::{IsTerminal, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A one-line note on stderr, redrawn in place.
pub struct Progress {
    on_terminal: bool,
}

/// Width of the bar, in characters.
const BAR_WIDTH: usize = 30;

/// How often the clock of a running call is redrawn.
const TICK: Duration = Duration::from_millis(200);

impl Progress {
    pub fn on_terminal() -> Progress {
        Progress {
            on_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Replaces the note with `text`.
    pub fn show(&self, text: &str) {
        if self.on_terminal {
            eprint!("\r\x1b[K{text}");
        }
    }

    /// Removes the note.
    pub fn clear(&self) {
        if self.on_terminal {
            eprint!("\r\x1b[K");
        }
    }

    /// `label [#########.........]  45%`, for work whose size is known.
    pub fn bar(&self, label: &str, done: u64, total: u64) {
        if self.on_terminal {
            self.show(&bar_text(label, done, total));
        }
    }

    /// Runs `work`, showing `label` and the seconds it has taken until it
    /// is done.
    pub async fn while_running<T>(&self, label: &str, work: impl Future<Output = T>) -> T {
        if !self.on_terminal {
            return work.await;
        }
        let started = Instant::now();
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                done = &mut work => {
                    self.clear();
                    return done;
                }
                _ = ticks.tick() => {
                    self.show(&format!("{label} {:.0} s", started.elapsed().as_secs_f64()));
                }
            }
        }
    }
}

fn bar_text(label: &str, done: u64, total: u64) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    format!(
        "{label} [{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        fraction * 100.0
    )
}

/// A reader that counts the bytes read through it, for a bar over a file.
pub struct CountingReader<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> CountingReader<R> {
    /// The reader, and the count to look at while it is read.
    pub fn new(inner: R) -> (CountingReader<R>, Rc<Cell<u64>>) {
        let read = Rc::new(Cell::new(0));
        (
            CountingReader {
                inner,
                read: read.clone(),
            },
            read,
        )
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.read.set(self.read.get() + count as u64);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_work_and_never_overflows() {
        assert!(bar_text("reading", 0, 100).ends_with(&format!("[{}]   0%", ".".repeat(30))));
        assert!(bar_text("reading", 50, 100).contains(&"#".repeat(15)));
        assert!(bar_text("reading", 500, 100).ends_with(&format!("[{}] 100%", "#".repeat(30))));
        assert!(bar_text("reading", 0, 0).ends_with("100%"));
    }

    #[test]
    fn the_counting_reader_counts_every_byte() {
        let (mut reader, read) = CountingReader::new(&b"192.0.2.1\n192.0.2.2\n"[..]);
        let mut text = String::new();
        reader.read_to_string(&mut text).expect("read");
        assert_eq!(read.get(), 20);
    }
}
