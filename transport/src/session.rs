//! What every session over a [`crate::Transport`] has: whether it is over and why, the tasks
//! that end with it, and a writer that owns the write half until then.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Whether a session is over, and the reason: set once, by whoever notices first.
#[derive(Debug)]
pub struct Closed {
    reason: watch::Sender<Option<String>>,
}

impl Default for Closed {
    fn default() -> Self {
        Closed { reason: watch::channel(None).0 }
    }
}

impl Closed {
    /// An open session's state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the session with `reason`. True for the call that ended it; later reasons are
    /// dropped (the first failure is the one worth reporting).
    pub fn close(&self, reason: &str) -> bool {
        self.reason.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason.to_owned());
                true
            } else {
                false
            }
        })
    }

    /// Why the session ended, once it has.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// Resolves with the reason once the session is over.
    pub async fn wait(&self) -> String {
        let mut rx = self.reason.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // Unreachable while `self` is borrowed; kept as an answer rather than a panic.
            Err(_) => "connection dropped".into(),
        };
        reason
    }

    /// A handle a task selects on to stop when the session ends.
    pub fn watch(&self) -> CloseWatch {
        CloseWatch(self.reason.subscribe())
    }
}

/// [`Closed`] as seen from a task.
#[derive(Debug)]
pub struct CloseWatch(watch::Receiver<Option<String>>);

impl CloseWatch {
    /// Resolves once the session is over (at once if it already is). Cancel-safe: made for
    /// `tokio::select!` in a loop.
    pub async fn closed(&mut self) {
        // An error means the state itself is gone, which also ends the session.
        let _ = self.0.wait_for(Option::is_some).await;
    }
}

/// A session's shared state, as far as [`Tasks`] needs it.
pub trait Session: Send + Sync + 'static {
    /// Ends the session: records `reason` and fails whatever waits on it.
    fn close(&self, reason: &str);
}

/// The tasks of one session. Closing or dropping this closes the session and aborts them, so a
/// session whose last handle is gone leaves no task behind.
pub struct Tasks<S: Session> {
    session: Arc<S>,
    handles: Vec<JoinHandle<()>>,
}

impl<S: Session> Tasks<S> {
    /// No tasks yet, for `session`.
    pub fn new(session: Arc<S>) -> Self {
        Tasks { session, handles: Vec::new() }
    }

    /// Spawns a task that ends with the session.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }

    /// Closes the session with `reason` and aborts its tasks.
    pub fn close(&self, reason: &str) {
        self.session.close(reason);
        for h in &self.handles {
            h.abort();
        }
    }
}

impl<S: Session> Drop for Tasks<S> {
    fn drop(&mut self) {
        self.close("connection dropped by the client");
    }
}

/// Writes what arrives on `queue` until the queue ends or the session closes; `Err` when a
/// write fails. It stops as soon as the session is closed, even in the middle of a write to a
/// peer that no longer reads: holding the write half would keep the socket open.
pub async fn write_until_closed<B: AsRef<[u8]>>(
    mut write: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<B>,
    mut closed: CloseWatch,
) -> std::io::Result<()> {
    loop {
        let bytes = tokio::select! {
            m = queue.recv() => match m {
                Some(bytes) => bytes,
                None => return Ok(()),
            },
            _ = closed.closed() => return Ok(()),
        };
        tokio::select! {
            r = write.write_all(bytes.as_ref()) => r?,
            _ = closed.closed() => return Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept() {
        let c = Closed::new();
        assert!(!c.is_closed() && c.reason().is_none());
        let mut watch = c.watch();
        assert!(c.close("read failed"));
        assert!(!c.close("write failed"));
        assert_eq!(c.reason().as_deref(), Some("read failed"));
        assert_eq!(c.wait().await, "read failed");
        watch.closed().await;
    }

    struct Counted(std::sync::Mutex<Vec<String>>, Closed);

    impl Session for Counted {
        fn close(&self, reason: &str) {
            self.1.close(reason);
            self.0.lock().unwrap().push(reason.to_owned());
        }
    }

    #[tokio::test]
    async fn dropping_the_tasks_closes_the_session_and_aborts_them() {
        let s = Arc::new(Counted(Default::default(), Closed::new()));
        let mut tasks = Tasks::new(s.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        drop(tasks);
        // The sender is dropped only when the aborted task is.
        assert!(rx.await.is_err());
        assert_eq!(s.1.reason().as_deref(), Some("connection dropped by the client"));
        assert_eq!(*s.0.lock().unwrap(), ["connection dropped by the client"]);
    }

    #[tokio::test]
    async fn the_writer_writes_in_order_and_stops_when_closed() {
        let (client, mut server) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = Closed::new();
        let writer = tokio::spawn(write_until_closed(client, rx, closed.watch()));
        tx.send(b"ab".to_vec()).unwrap();
        tx.send(b"cd".to_vec()).unwrap();
        let mut got = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut got).await.unwrap();
        assert_eq!(&got, b"abcd");
        closed.close("closed by the client");
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_is_an_error() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(b"x".to_vec()).unwrap();
        let closed = Closed::new();
        assert!(write_until_closed(client, rx, closed.watch()).await.is_err());
    }
}
