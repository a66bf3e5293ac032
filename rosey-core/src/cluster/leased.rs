//! [`LeasedCytube`]: the CyTube connector of one node among several on one NATS. Every node with a
//! `cytube` section runs one; only the node holding the [lease](super::lease) `cytube-<channel>` is
//! in the channel. When the holder dies (SIGKILL included) its claim runs out within the lease's ttl
//! and another node takes the lease and joins; when it stops cleanly it gives the lease back at once.
//!
//! The nodes without the lease wait in standby (healthy: they run plugins and route commands, and
//! their replies reach the channel through the holder). What is said goes through the cluster's
//! [chat queue](super::chat_queue): a line is taken off it once CyTube has taken it, so replies said
//! while no node holds the channel are said once one does, and a dead holder's unsaid lines go to
//! the next. Permanent CyTube errors (a ban, a wrong
//! password) stop the node that meets them, as with a single node: another node would meet them
//! too. A registered account is the one to use: a new holder's login takes over the old holder's
//! session at once, where a guest name would be "in use" until CyTube's ping timeout.

use std::pin::pin;
use std::sync::Arc;

use async_trait::async_trait;

use super::ClusterError;
use super::chat_queue::{ChatQueue, ChatQueueOptions};
use super::lease::{Lease, LeaseOptions};
use crate::bus::{EventBus, NatsBus};
use crate::connector::cytube::{CytubeConnector, CytubeOptions, UserDirectory};
use crate::connector::{Connector, ConnectorError, ConnectorHandle, ConnectorStats};
use crate::health::{self, HealthRegistry};
use crate::service::ServiceHandle;

/// The lease key of a channel.
pub fn lease_key(channel: &str) -> String {
    format!("cytube-{channel}")
}

/// The CyTube connector that holds the channel only while it holds the lease; see the
/// [module docs](self).
pub struct LeasedCytube {
    options: CytubeOptions,
    client: async_nats::Client,
    node: String,
    users: UserDirectory,
    stats: ConnectorStats,
    health: Option<HealthRegistry>,
}

impl std::fmt::Debug for LeasedCytube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedCytube").field("node", &self.node).finish_non_exhaustive()
    }
}

impl LeasedCytube {
    /// A connector for `options`' channel, competing for it as `node` over `bus`'s NATS server
    /// (which must have JetStream on).
    pub fn new(options: CytubeOptions, bus: &NatsBus, node: &str) -> Self {
        Self {
            options,
            client: bus.client().clone(),
            node: node.to_owned(),
            users: UserDirectory::default(),
            stats: ConnectorStats::default(),
            health: None,
        }
    }

    /// Reports into `health` as the [`CONNECTOR`](health::CONNECTOR): `standby: …` (healthy) while
    /// another node holds the channel, then as the CyTube connector does.
    pub fn with_health(mut self, health: HealthRegistry) -> Self {
        self.health = Some(health);
        self
    }

    /// The channel's users while this node holds it (empty in standby).
    pub fn users(&self) -> UserDirectory {
        self.users.clone()
    }
}

#[async_trait]
impl Connector for LeasedCytube {
    fn name(&self) -> &str {
        "cytube"
    }

    fn stats(&self) -> ConnectorStats {
        self.stats.clone()
    }

    /// Starts competing for the lease and returns at once: joined or in standby.
    async fn start(
        self: Box<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<ConnectorHandle, ConnectorError> {
        let Self { options, client, node, users, stats, health } = *self;
        let key = lease_key(&options.channel);
        let lease_client = client.clone();
        let lease = match Lease::start(lease_client, LeaseOptions::new(key.clone(), node.clone()))
            .await
        {
            Ok(lease) => lease,
            Err(error @ ClusterError::LeaseBucket { .. }) => {
                // Plain NATS, without JetStream: no lease to hold, so no failover; the node joins
                // as a single node does (run one node with a `cytube` section there).
                tracing::warn!(
                    message = "JetStream is not available: this node joins the CyTube channel without a lease (no failover; run only one node with a cytube section, or turn JetStream on)",
                    %error
                );
                let connector = cytube_connector(&options, &users, &stats, health.as_ref());
                return Box::new(connector).start(bus).await;
            }
            Err(error) => return Err(error.into()),
        };
        // The chat queue exists from now on (every node opens it), so replies said anywhere are kept
        // until a holder says them.
        let queue_options = ChatQueueOptions::default();
        let open_queue = move || ChatQueue::open(client.clone(), queue_options.clone());
        if let Err(error) = open_queue().await {
            if let Err(stop_error) = lease.stop().await {
                tracing::warn!(message = "cannot give the lease back", error = %stop_error);
            }
            return Err(error.into());
        }
        let channel = options.channel.clone();
        let inner_health = health.clone();
        let connector = move |queue: ChatQueue| {
            cytube_connector(&options, &users, &stats, inner_health.as_ref()).chat_queue(queue)
        };
        // Holding the lease at start: join now, so that a node that holds the channel is ready only
        // once joined (as a single node is); a start that fails gives the lease back.
        let mut first = None;
        if lease.held() {
            tracing::info!(message = "this node holds the CyTube channel; joining", lease = %key);
            let started = match open_queue().await {
                Ok(queue) => Box::new(connector(queue)).start(bus.clone()).await,
                Err(error) => Err(error.into()),
            };
            match started {
                Ok(handle) => first = Some(handle),
                Err(error) => {
                    if let Err(stop_error) = lease.stop().await {
                        tracing::warn!(message = "cannot give the lease back", error = %stop_error);
                    }
                    return Err(error);
                }
            }
        }
        Ok(ServiceHandle::spawn("cytube", move |stop| async move {
            let mut held = lease.watch();
            let ended = loop {
                let handle = match first.take() {
                    Some(handle) => handle,
                    None => {
                        if !*held.borrow() {
                            if let Some(health) = &health {
                                let detail = format!("standby: another node holds {channel}");
                                health.report(health::CONNECTOR, true, detail);
                            }
                            tracing::info!(message = "in standby: another node holds the CyTube channel", lease = %key);
                        }
                        tokio::select! {
                            () = stop.cancelled() => break Ok(()),
                            alive = until(&mut held, true) => if !alive { break Ok(()) },
                        }
                        tracing::info!(message = "this node holds the CyTube channel; joining", lease = %key);
                        let queue = match open_queue().await {
                            Ok(queue) => queue,
                            Err(error) => break Err(error.into()),
                        };
                        let start = Box::new(connector(queue)).start(bus.clone());
                        let started = tokio::select! {
                            () = stop.cancelled() => break Ok(()),
                            _ = until(&mut held, false) => {
                                tracing::warn!(message = "lost the lease while joining; back to standby", lease = %key);
                                continue;
                            }
                            started = start => started,
                        };
                        match started {
                            Ok(handle) => handle,
                            Err(error) => break Err(error),
                        }
                    }
                };
                let stopper = handle.stopper();
                let mut ended = pin!(handle.wait());
                tokio::select! {
                    () = stop.cancelled() => {
                        stopper.stop();
                        let _ = ended.await;
                        break Ok(());
                    }
                    _ = until(&mut held, false) => {
                        tracing::warn!(message = "lost the lease; leaving the CyTube channel", lease = %key);
                        stopper.stop();
                        let _ = ended.await;
                    }
                    result = &mut ended => break result,
                }
            };
            if let Err(error) = lease.stop().await {
                tracing::warn!(message = "cannot give the lease back; it runs out by itself", %error);
            }
            ended
        }))
    }
}

/// The CyTube connector of this node, counting into the leased connector's user table and stats and
/// reporting into its health.
fn cytube_connector(
    options: &CytubeOptions,
    users: &UserDirectory,
    stats: &ConnectorStats,
    health: Option<&HealthRegistry>,
) -> CytubeConnector {
    let connector = CytubeConnector::new(options.clone()).sharing(users.clone(), stats.clone());
    match health {
        Some(health) => connector.with_health(health.clone()),
        None => connector,
    }
}

/// Waits until the lease's flag is `value`; false when the lease's task has ended.
async fn until(held: &mut tokio::sync::watch::Receiver<bool>, value: bool) -> bool {
    held.wait_for(|held| *held == value).await.is_ok()
}
