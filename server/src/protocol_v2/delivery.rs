//! The commands of a subscribed consumer (SUB, RDY, FIN, REQ, TOUCH, CLS), the publishes
//! (PUB, MPUB, DPUB), and `pump`, which moves messages from the channel into the output
//! buffer as RDY allows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::v2::{self, ProtocolError};

use super::{Conn, ConnError, Stream};
use crate::channel::Channel;
use crate::client::ConnState;
use crate::topic::Topic;

impl<S: Stream> Conn<S> {
    pub(super) async fn sub(
        &mut self,
        topic_name: String,
        channel_name: String,
    ) -> Result<(), ProtocolError> {
        if self.client.state() != ConnState::Init {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                "cannot SUB in current state",
            ));
        }
        if self.heartbeat.is_none() {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                "cannot SUB with heartbeats disabled",
            ));
        }
        self.check_auth("SUB", &topic_name, &channel_name).await?;
        let opts = self.nsqd.opts();
        let failed =
            |e: engine::Error| ProtocolError::fatal("E_SUB_FAILED", format!("SUB failed {e}"));
        // A topic or channel being deleted can race with SUB; retry a few times like NSQ.
        for _ in 0..3 {
            let topic = self.nsqd.get_topic(&topic_name).map_err(failed)?;
            let channel = self
                .nsqd
                .get_channel(&topic, &channel_name)
                .map_err(failed)?;
            if let Err(max) =
                channel.add_client(self.client.clone(), opts.max_channel_consumers as usize)
            {
                return Err(ProtocolError::fatal(
                    "E_TOO_MANY_CHANNEL_CONSUMERS",
                    format!(
                        "channel consumers for {topic_name}:{channel_name} exceeds limit of {max}"
                    ),
                ));
            }
            if channel.deleted.load(Ordering::Acquire) || topic.deleted.load(Ordering::Acquire) {
                channel.remove_client(self.client.id);
                continue;
            }
            self.client.info.lock().sub = Some((topic_name.clone(), channel_name.clone()));
            self.client.set_state(ConnState::Subscribed);
            self.sub = Some((topic, channel));
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            return Ok(());
        }
        Err(ProtocolError::fatal(
            "E_SUB_FAILED",
            "SUB failed channel is exiting",
        ))
    }

    pub(super) fn rdy(&mut self, count: i64) -> Result<(), ProtocolError> {
        match self.client.state() {
            ConnState::Closing => return Ok(()),
            ConnState::Subscribed => {}
            ConnState::Init => {
                return Err(ProtocolError::fatal(
                    "E_INVALID",
                    "cannot RDY in current state",
                ))
            }
        }
        let max = self.nsqd.opts().max_rdy_count;
        if count < 0 || count > max {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                format!("RDY count {count} out of range 0-{max}"),
            ));
        }
        self.client.ready_count.store(count, Ordering::Release);
        Ok(())
    }

    pub(super) fn cls(&mut self) -> Result<(), ProtocolError> {
        if self.client.state() != ConnState::Subscribed {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                "cannot CLS in current state",
            ));
        }
        self.client.set_state(ConnState::Closing);
        self.client.ready_count.store(0, Ordering::Release);
        self.push_frame(v2::FRAME_TYPE_RESPONSE, b"CLOSE_WAIT");
        Ok(())
    }

    fn subscribed_channel(&self, what: &str) -> Result<Arc<Channel>, ProtocolError> {
        let state = self.client.state();
        match &self.sub {
            Some((_, c)) if state != ConnState::Init => Ok(c.clone()),
            _ => Err(ProtocolError::fatal(
                "E_INVALID",
                format!("cannot {what} in current state"),
            )),
        }
    }

    /// The message-id key of the subscribed topic (see [`crate::guid`]).
    fn wire_key(&self) -> u64 {
        let mask = self.sub.as_ref().map_or(0, |(t, _)| t.id_mask);
        crate::guid::wire_key(self.nsqd.node_id, mask)
    }

    pub(super) fn fin(&mut self, id: &[u8; 16]) -> Result<(), ProtocolError> {
        let channel = self.subscribed_channel("FIN")?;
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.finish(&self.client, &stored).map_err(|e| {
            ProtocolError::soft(
                "E_FIN_FAILED",
                format!("FIN {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    /// Whether a FIN can wait to be finished with the next ones from the same input: only
    /// when it would pass the checks `exec` and `fin` make (subscribed, TLS if required).
    pub(super) fn can_batch_fin(&self) -> bool {
        self.sub.is_some()
            && self.client.state() != ConnState::Init
            && (!self.nsqd.opts().tls_required() || self.client.info.lock().tls)
    }

    /// Execute the gathered FINs (see `process_input`): one `Channel::finish_many`, then an
    /// E_FIN_FAILED error frame per id that failed, in order, as `fin` would send them.
    pub(super) fn finish_gathered(&mut self) {
        if self.fins.is_empty() {
            return;
        }
        let mut fins = std::mem::take(&mut self.fins);
        match self.sub.as_ref().map(|(_, c)| c.clone()) {
            Some(channel) => {
                let key = self.wire_key();
                self.fin_ids.clear();
                self.fin_ids
                    .extend(fins.iter().map(|id| crate::guid::from_wire(key, id)));
                self.fin_failed.clear();
                channel.finish_many(&self.client, &self.fin_ids, &mut self.fin_failed);
                for i in 0..self.fin_failed.len() {
                    let (at, e) = self.fin_failed[i];
                    let err = ProtocolError::soft(
                        "E_FIN_FAILED",
                        format!("FIN {} failed {e}", String::from_utf8_lossy(&fins[at])),
                    );
                    self.client_error(&err);
                }
            }
            // Not reached (gathered only while subscribed); answer each as `fin` would.
            None => {
                for id in &fins {
                    if let Err(e) = self.fin(id) {
                        self.client_error(&e);
                    }
                }
            }
        }
        fins.clear();
        self.fins = fins;
    }

    pub(super) fn req(&mut self, id: &[u8; 16], timeout_ms: i64) -> Result<(), ProtocolError> {
        let channel = self.subscribed_channel("REQ")?;
        let max = self.nsqd.opts().max_req_timeout;
        // Out-of-range delays are clamped, as NSQ 1.x does.
        let delay = Duration::from_millis(timeout_ms.max(0) as u64).min(max);
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.requeue(&self.client, &stored, delay).map_err(|e| {
            ProtocolError::soft(
                "E_REQ_FAILED",
                format!("REQ {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    pub(super) fn touch(&mut self, id: &[u8; 16]) -> Result<(), ProtocolError> {
        let channel = self.subscribed_channel("TOUCH")?;
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.touch(&self.client, &stored).map_err(|e| {
            ProtocolError::soft(
                "E_TOUCH_FAILED",
                format!("TOUCH {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    /// PUB, MPUB and DPUB (`cmd` names which, for the error code and text).
    pub(super) async fn publish(
        &mut self,
        cmd: &'static str,
        topic_name: String,
        bodies: Vec<Bytes>,
        deliver_at_ms: u64,
    ) -> Result<(), ProtocolError> {
        self.check_auth(cmd, &topic_name, "").await?;
        let code = match cmd {
            "MPUB" => "E_MPUB_FAILED",
            "DPUB" => "E_DPUB_FAILED",
            _ => "E_PUB_FAILED",
        };
        let failed =
            |why: &dyn std::fmt::Display| ProtocolError::fatal(code, format!("{cmd} failed {why}"));
        if self.nsqd.exiting.load(Ordering::Acquire) {
            return Err(failed(&"exiting"));
        }
        let n = bodies.len() as u64;
        let (topic, wait, owed) = self
            .nsqd
            .publish(&topic_name, bodies, deliver_at_ms, true, true)
            .map_err(|e| failed(&e))?;
        if owed && !self.spill_owed.iter().any(|t| Arc::ptr_eq(t, &topic)) {
            self.spill_owed.push(topic);
        }
        if let Some(wait) = wait {
            // Flush what we owe the client while the fsync runs, then answer.
            let _ = self.flush().await;
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(failed(&e)),
                Err(_) => return Err(failed(&"exiting")),
            }
        }
        self.client.count_pub(&topic_name, n);
        self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
        Ok(())
    }

    /// Move messages from the channel into the output buffer, up to the client's RDY room.
    /// Returns true if it filled the room or the buffer (there may be more to send).
    pub(super) fn pump(
        &mut self,
        topic: &Arc<Topic>,
        channel: &Arc<Channel>,
    ) -> Result<bool, ConnError> {
        if self.client.state() != ConnState::Subscribed {
            return Ok(false);
        }
        let room = self.client.room();
        if room == 0 {
            return Ok(false);
        }
        // Bound one batch by count and by bytes (the output buffer, at least 256 KiB),
        // so a big RDY does not build a huge buffer in one go: what a connection holds
        // beyond its in-flight messages stays small even if the client never reads.
        let budget = self.output_buffer_size.max(256 * 1024);
        let batch = room.min(1024).min((budget / self.avg_frame.max(1)).max(1));
        let mut msgs = std::mem::take(&mut self.scratch);
        msgs.clear();
        let paused = topic.is_paused();
        let take = |msgs: &mut Vec<engine::Message>| {
            channel.take_unmarked(&self.client, batch, paused, msgs)
        };
        // Reads that would wait for the disk run with the worker handed over to the
        // runtime's blocking pool, so other connections (and /ping) are not stalled
        // behind a slow disk. Reads the page cache serves (nearly all: the log's tail was
        // just written) run here: the hand-over costs more than they do.
        let deadline = if channel.cursor.next_needs_disk() && !channel.cursor.next_read_cached() {
            crate::nsqd::blocking(|| take(&mut msgs))?
        } else {
            take(&mut msgs)?
        };
        let got = msgs.len();
        let bytes: usize = msgs.iter().map(|m| m.body.len() + 34).sum();
        if let Some(avg) = bytes.checked_div(got) {
            self.avg_frame = (self.avg_frame * 3 + avg) / 4;
        }
        let key = crate::guid::wire_key(self.nsqd.node_id, topic.id_mask);
        if self.sample_rate > 0 {
            // Sampled out: NSQ drops it for this client; we finish it (in flight first) so
            // it is not redelivered forever.
            let keep: Vec<bool> = msgs
                .iter()
                .map(|_| rand::random::<u32>() % 100 < self.sample_rate as u32)
                .collect();
            channel.mark_in_flight(&self.client, deadline, msgs.iter().cloned());
            for (m, keep) in msgs.iter().zip(keep) {
                if !keep {
                    let _ = channel.finish(&self.client, &m.id);
                } else {
                    self.encode(key, m);
                }
            }
            msgs.clear();
        } else {
            for m in &msgs {
                self.encode(key, m);
            }
            // Nothing was sent yet (the buffer is flushed after this returns): the messages
            // move into the in-flight table, no copy kept.
            channel.mark_in_flight(&self.client, deadline, msgs.drain(..));
        }
        self.scratch = msgs;
        Ok(got == batch)
    }

    /// One message frame into the output buffer; the id on the wire is the engine's id
    /// under the topic's key (see crate::guid).
    fn encode(&mut self, key: u64, m: &engine::Message) {
        v2::encode_message_frame(
            &mut self.out,
            m.timestamp_ns,
            m.attempts,
            &crate::guid::to_wire(key, &m.id),
            &m.body,
        );
    }
}
