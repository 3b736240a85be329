//! The writer behind the log lines: every thread appends its formatted line to one shared buffer,
//! and one background thread writes what has gathered to stdout and the log file, at most
//! `FLUSH_INTERVAL` after the first line of a batch. A request's line then costs a copy into
//! memory, not a channel message, a thread wake-up and a write(2) each, which at thousands of
//! requests a second was a tenth of the server's CPU.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a line waits in memory before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Gathered bytes that get written without waiting for the interval.
const WRITE_AT: usize = 256 * 1024;
/// Gathered bytes past which writing threads wait for the writer: back-pressure, never a dropped
/// line.
const BLOCK_AT: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Buffer {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Tells the writer that lines wait (or that it should stop).
    lines_waiting: Condvar,
    /// Tells blocked threads that the buffer was taken.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A thread that panicked while appending left at worst a partial line.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Appends lines for the background writer; `make_writer` for tracing-subscriber.
pub(super) struct Lines(Arc<Shared>);

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &*self.0;
        let mut buffer = shared.lock();
        while buffer.lines.len() >= BLOCK_AT && !buffer.closed {
            buffer = shared
                .room
                .wait(buffer)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let first = buffer.lines.is_empty();
        buffer.lines.extend_from_slice(line);
        // One wake-up per batch: the writer is asleep only while the buffer is empty, or when
        // a large batch should not wait for the interval.
        if first || buffer.lines.len() >= WRITE_AT {
            shared.lines_waiting.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = &'a Lines;
    fn make_writer(&'a self) -> &'a Lines {
        self
    }
}

/// Writes what is left and stops the writer when dropped: keep it until exit.
pub(super) struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines_waiting.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread over `outputs` (stdout, the log file).
pub(super) fn start(outputs: Vec<Box<dyn Write + Send>>) -> std::io::Result<(Lines, WriterGuard)> {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_batches(&writer, outputs))?;
    Ok((
        Lines(shared.clone()),
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches(shared: &Shared, mut outputs: Vec<Box<dyn Write + Send>>) {
    let mut batch = Vec::new();
    loop {
        let mut buffer = shared.lock();
        while buffer.lines.is_empty() && !buffer.closed {
            buffer = shared
                .lines_waiting
                .wait(buffer)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Lines are here: let the rest of the batch gather, unless it is large already.
        if buffer.lines.len() < WRITE_AT && !buffer.closed {
            buffer = shared
                .lines_waiting
                .wait_timeout(buffer, FLUSH_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let closed = buffer.closed;
        std::mem::swap(&mut batch, &mut buffer.lines);
        drop(buffer);
        shared.room.notify_all();
        for output in &mut outputs {
            // Nowhere to report a failing log destination but the log itself.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
        }
        batch.clear();
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_every_thread_reaches_every_output_whole_and_once() {
        let (first, second) = (Captured::default(), Captured::default());
        let (lines, guard) =
            start(vec![Box::new(first.clone()), Box::new(second.clone())]).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let lines = &lines;
                scope.spawn(move || {
                    for n in 0..5000 {
                        let mut writer: &Lines = lines;
                        writer
                            .write_all(format!("{thread} {n} {}\n", "x".repeat(n % 300)).as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(guard);
        for output in [first, second] {
            let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
            let mut seen: Vec<Vec<usize>> = vec![Vec::new(); 4];
            for line in text.lines() {
                let mut fields = line.split(' ');
                let thread: usize = fields.next().unwrap().parse().unwrap();
                let n: usize = fields.next().unwrap().parse().unwrap();
                assert_eq!(fields.next().unwrap().len(), n % 300, "{line}");
                seen[thread].push(n);
            }
            // Each thread's lines in the order it wrote them.
            for numbers in seen {
                assert_eq!(numbers, (0..5000).collect::<Vec<_>>());
            }
        }
    }
}
