//! Where log lines go: stderr, one `write` for a burst of lines on a runtime worker. A worker
//! collects its lines while it has work and writes them when it runs out (just before it parks)
//! or when they pass 16 KiB, so a busy proxy does not spend a system call per request on its
//! access line (docs/performance.md). Under load the lines of a few milliseconds are in memory,
//! as with nginx's `access_log ... buffer=`; an idle worker writes at once. Threads that never
//! park (the main thread, blocking tasks) write each line as it comes.

use std::cell::RefCell;
use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// Beyond this a worker writes its lines without waiting to run out of work.
const FLUSH_AT: usize = 16 * 1024;

thread_local! {
    /// This thread's lines not yet written; `None` on threads that write each line at once.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Lines kept back, written when dropped too (the thread ends).
struct Pending(Vec<u8>);

impl Pending {
    fn write_out(&mut self) {
        if !self.0.is_empty() {
            // Nowhere to report a failed log write; the lines are dropped, as tracing does.
            let _ = io::stderr().write_all(&self.0);
            self.0.clear();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// For the runtime's `on_thread_park`: writes this worker's lines and keeps it collecting.
pub fn on_park() {
    let _ = PENDING.try_with(|pending| {
        let mut pending = pending.borrow_mut();
        pending
            .get_or_insert_with(|| Pending(Vec::with_capacity(FLUSH_AT)))
            .write_out();
    });
}

/// The writer tracing-subscriber's layer gets for each line.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line
    }
}

pub struct Line;

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let kept = PENDING.try_with(|pending| {
            let mut pending = pending.borrow_mut();
            let pending = pending.as_mut()?;
            pending.0.extend_from_slice(buf);
            if pending.0.len() >= FLUSH_AT {
                pending.write_out();
            }
            Some(())
        });
        match kept {
            Ok(Some(())) => Ok(buf.len()),
            _ => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
