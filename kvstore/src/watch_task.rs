use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::{client::Client, value::StoreValue, watch_store::RestartableWatchStore};

/// A [`RestartableWatchStore`] that is idle between connections or watches
/// through one in a task of its own: what a remote cluster's connection (in
/// an agent) or mirror (in kvstoremesh) keeps per kind, so that each new
/// connection lists again and delivers only the difference.
pub struct WatchTask<V> {
    /// For logs (`c2/ipcache`).
    name: String,
    state: State<V>,
}

enum State<V> {
    Idle(Box<RestartableWatchStore<V>>),
    Running {
        token: CancellationToken,
        task: JoinHandle<Box<RestartableWatchStore<V>>>,
    },
    /// Its task panicked: the store is lost (logged).
    Lost,
}

impl<V> std::fmt::Debug for WatchTask<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Idle(_) => "idle",
            State::Running { .. } => "running",
            State::Lost => "lost",
        };
        f.debug_struct("WatchTask")
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}

impl<V: StoreValue> WatchTask<V> {
    /// An idle store.
    pub fn new(name: impl Into<String>, store: RestartableWatchStore<V>) -> Self {
        Self {
            name: name.into(),
            state: State::Idle(Box::new(store)),
        }
    }

    /// Lets `configure` set up the idle store for the next connection (its
    /// validator, prefix, canary), then watches through `client` until
    /// [`WatchTask::stop`] or until `parent` is cancelled. Nothing if it
    /// runs already or was lost.
    pub fn start(
        &mut self,
        client: &Client,
        parent: &CancellationToken,
        configure: impl FnOnce(&mut RestartableWatchStore<V>),
    ) {
        let mut store = match std::mem::replace(&mut self.state, State::Lost) {
            State::Idle(store) => store,
            other => {
                self.state = other;
                return;
            }
        };
        configure(&mut store);
        let token = parent.child_token();
        let client = client.clone();
        let task = {
            let token = token.clone();
            tokio::spawn(async move {
                store.watch(&client, &token).await;
                store
            })
        };
        self.state = State::Running { token, task };
    }

    /// Stops watching; what the store delivered stays delivered.
    pub async fn stop(&mut self) {
        let (token, task) = match std::mem::replace(&mut self.state, State::Lost) {
            State::Running { token, task } => (token, task),
            other => {
                self.state = other;
                return;
            }
        };
        token.cancel();
        self.state = match task.await {
            Ok(store) => State::Idle(store),
            Err(e) => {
                error!(store = self.name, error = %e, "a watch store's task failed; its data is no longer followed");
                State::Lost
            }
        };
    }

    /// Stops watching and deletes what the store delivered.
    pub async fn drain(&mut self) {
        self.stop().await;
        if let State::Idle(store) = &mut self.state {
            store.drain().await;
        }
    }
}
