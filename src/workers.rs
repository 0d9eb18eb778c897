//! Session workers: one single-threaded tokio runtime per thread, each
//! with its own I/O driver, and every session lives on one of them from
//! accept to close.
//!
//! A session's four wake-ups per query (client → proxy → backend → proxy →
//! client) then each come straight from the worker's own `epoll_wait`, and
//! no other thread is woken to look for work. A work-stealing runtime wakes
//! a second worker on its futex whenever a task becomes ready while others
//! run, which on a small machine shared with mariadbd and its clients costs
//! more than the balance it buys. Connections are still spread over all
//! workers (to the one with the fewest sessions), so a reconnect storm's
//! full handshakes use every core.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// The running workers. Dropping this stops them: sessions still running
/// on a worker are dropped (closed) with its runtime.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Sessions spawned on this worker and not yet finished.
    load: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Decrements a worker's load when its session ends, however it ends.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` workers (at least one), named `portcullis-w0`, ….
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-w{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    })
                })?;
            workers.push(Worker {
                handle,
                load: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// How many workers run.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `task` on the worker with the fewest running tasks, tracked by
    /// `tracker`. Sockets must be registered inside `task` (on the worker's
    /// I/O driver), not before it is spawned.
    pub fn spawn<F>(&self, tracker: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.load.fetch_add(1, Ordering::Relaxed);
        let guard = LoadGuard(worker.load.clone());
        tracker.spawn_on(
            async move {
                let _guard = guard;
                task.await
            },
            &worker.handle,
        );
    }

    /// Sessions currently on each worker, in worker order.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each new task goes to the worker with the fewest running, runs on
    /// that worker's own thread, and gives its slot back when it ends.
    #[tokio::test]
    async fn spreads_tasks_to_the_least_loaded_worker_and_counts_them() {
        let workers = Workers::start(2).unwrap();
        let tracker = TaskTracker::new();
        let mut releases = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..3 {
            let (release, released) = oneshot::channel::<()>();
            let (report, reported) = oneshot::channel::<String>();
            workers.spawn(&tracker, async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = report.send(name);
                let _ = released.await;
            });
            threads.push(reported.await.unwrap());
            releases.push(release);
        }
        assert_eq!(threads, ["portcullis-w0", "portcullis-w1", "portcullis-w0"]);
        assert_eq!(workers.loads(), [2, 1]);
        // End the first two (one on each worker); the third stays on w0.
        // Wait for the counts rather than for time.
        drop(releases.drain(..2));
        while workers.loads() != [1, 0] {
            tokio::task::yield_now().await;
        }
        drop(releases);
        tracker.close();
        tracker.wait().await;
        assert_eq!(workers.loads(), [0, 0]);
    }

    /// A worker count of 0 still starts one worker.
    #[tokio::test]
    async fn zero_means_one() {
        let workers = Workers::start(0).unwrap();
        assert_eq!(workers.len(), 1);
    }
}
