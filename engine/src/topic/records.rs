//! Reading a topic's records for channels (log, then memory) and appending copies at the
//! tail (relocated stragglers, imported messages).

use super::*;

impl TopicCore {
    /// Read up to `max` messages for channel `target` from `from` on; returns the next
    /// position.
    pub(crate) fn read_from(
        &self,
        from: u64,
        max: usize,
        target: u32,
        hint: &mut ReadHint,
        out: &mut Vec<Message>,
    ) -> Result<u64> {
        let st = self.state.lock();
        let mem_front = st.mem_front();
        let mut pos = from.max(st.start_seq);
        let mut room = max;
        let for_us = |h: &RecordHeader| h.target == 0 || h.target == target;
        if pos < mem_front && room > 0 {
            if let Some(log) = &st.log {
                let mut recs: Vec<StoredRecord> = Vec::new();
                pos = log.read(
                    pos,
                    room,
                    hint,
                    |h| h.seq < mem_front && for_us(h),
                    &mut recs,
                )?;
                room -= recs.len();
                out.extend(
                    recs.into_iter()
                        .map(|r| Message::from_record(&r.header, r.body)),
                );
            }
            if room > 0 {
                pos = pos.max(mem_front); // the log is exhausted below memory
            }
        }
        if pos >= mem_front && room > 0 {
            let skip = (pos - mem_front) as usize;
            for m in st.mem.iter().skip(skip) {
                if room == 0 {
                    break;
                }
                pos = m.header.seq + 1;
                if for_us(&m.header) {
                    out.push(Message::from_record(&m.header, m.body.clone()));
                    room -= 1;
                }
            }
        }
        Ok(pos)
    }

    /// The one record at `seq`, if it still exists.
    pub(crate) fn read_one(&self, seq: u64) -> Result<Option<Message>> {
        let st = self.state.lock();
        let mem_front = st.mem_front();
        if seq < st.start_seq {
            return Ok(None);
        }
        if seq >= mem_front {
            return Ok(st
                .mem
                .get((seq - mem_front) as usize)
                .filter(|m| m.header.seq == seq)
                .map(|m| Message::from_record(&m.header, m.body.clone())));
        }
        let Some(log) = &st.log else { return Ok(None) };
        let mut recs = Vec::new();
        let mut hint = ReadHint::default();
        log.read(seq, 1, &mut hint, |_| true, &mut recs)?;
        Ok(recs
            .into_iter()
            .find(|r| r.header.seq == seq)
            .map(|r| Message::from_record(&r.header, r.body)))
    }

    /// Append copies of `msgs` at the tail, targeted at channel `target`, keeping their ids,
    /// timestamps, deliver times and attempts. The memory tail goes to the log first so the
    /// log stays a prefix of the sequence. Returns the copies' sequences.
    ///
    /// If the append fails part-way, the copies that reached the log are returned with the
    /// error: the caller must account for them (they are in the log, targeted at it).
    pub(crate) fn append_relocated(
        &self,
        msgs: &[Message],
        target: u32,
    ) -> (Vec<u64>, Option<Error>) {
        match self.try_append_relocated(msgs, target) {
            Ok(v) => (v, None),
            Err((v, e)) => (v, Some(e)),
        }
    }

    pub(super) fn try_append_relocated(
        &self,
        msgs: &[Message],
        target: u32,
    ) -> std::result::Result<Vec<u64>, (Vec<u64>, Error)> {
        self.try_append_at_tail(msgs, target, true)
    }

    /// Append `msgs` at the tail of the log, targeted at channel `target` (0 = every
    /// channel), keeping their timestamps, deliver times and attempts, and their ids when
    /// `keep_ids` (else each gets the id of its own sequence).
    pub(super) fn try_append_at_tail(
        &self,
        msgs: &[Message],
        target: u32,
        keep_ids: bool,
    ) -> std::result::Result<Vec<u64>, (Vec<u64>, Error)> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let min_floor = self.spill_floor();
        let mut st = self.state.lock();
        self.wait_appending(&mut st);
        let n = st.mem.len();
        let min_floor = self.drop_floor(&st, min_floor);
        if let Err(e) = spill_front(&mut st, n, min_floor) {
            self.set_fault(&e);
            self.note_front(&st);
            return Err((Vec::new(), e));
        }
        let first = st.next_seq;
        let copies: Vec<(RecordHeader, &[u8])> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    RecordHeader {
                        seq: first + i as u64,
                        timestamp_ns: m.timestamp_ns,
                        deliver_at_ms: m.deliver_at_ms,
                        target,
                        attempts: m.attempts,
                        id: if keep_ids {
                            m.id
                        } else {
                            message_id(first + i as u64)
                        },
                    },
                    &m.body[..],
                )
            })
            .collect();
        let Some(log) = st.log.as_mut() else {
            return Err((Vec::new(), Error::Closed));
        };
        let r = log.append(copies.iter().map(|(h, b)| (*h, *b)));
        // Copies that reached the log keep their sequences even if the rest failed.
        let stored_end = log.end_seq();
        st.next_seq = st.next_seq.max(stored_end);
        if let Err(e) = r {
            self.set_fault(&e);
            self.note_front(&st);
            let written = (first..stored_end.clamp(first, first + msgs.len() as u64)).collect();
            return Err((written, e));
        }
        self.clear_fault();
        st.unsynced += msgs.len() as u64;
        self.note_front(&st);
        Ok((first..first + msgs.len() as u64).collect())
    }
}
