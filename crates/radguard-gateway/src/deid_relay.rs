//! De-identifying routes: the C-STORE data set is transformed in the stream. The elements before
//! Pixel Data are held (up to the route's cap), transformed by radguard-deid and re-encoded; only
//! then does the command (with the new SOP Instance UID) go upstream, followed by the new head
//! and the pixel data, which passes through untouched. The upstream's C-STORE-RSP is given back
//! to the client with the client's own SOP Instance UID.

use radguard_deid::command::set_affected_sop_instance_uid;
use radguard_deid::stream::StreamDeid;

use crate::tls::DeidRoute;

/// One C-STORE being de-identified.
pub struct DeidMessage {
    pub message_id: u16,
    pub context_id: u8,
    pub sop_class: String,
    pub original_uid: String,
    command: Vec<u8>,
    stream: Option<StreamDeid>,
    head_sent: bool,
}

/// What the relay does after a data fragment.
pub enum DeidStep {
    /// Nothing to send yet (the head is still being collected).
    Hold,
    /// Send the (rewritten) command if given, then these data set bytes; `last` marks the end
    /// of the data set.
    Emit {
        command: Option<Vec<u8>>,
        data: Vec<u8>,
        last: bool,
        report: Option<DeidSummary>,
    },
    /// Nothing went upstream: answer the client with this status and drop the rest.
    Refuse { status: u16, comment: String },
    /// The upstream already holds part of the data set: abort.
    Abort(String),
}

/// What the audit trail learns about one de-identified instance (no values, only counts).
#[derive(Debug, Clone)]
pub struct DeidSummary {
    pub new_sop_instance_uid: String,
    pub uids_replaced: usize,
    pub private_removed: usize,
    pub dates_shifted: usize,
    pub burned_in_allowed: Option<String>,
}

impl DeidMessage {
    /// Starts de-identifying a C-STORE whose data set uses transfer syntax `ts`.
    pub fn start(
        route: &DeidRoute,
        ts: &str,
        message_id: u16,
        context_id: u8,
        raw_command: Vec<u8>,
        sop_class: &str,
        sop_instance: &str,
    ) -> Result<DeidMessage, (u16, String)> {
        let stream = StreamDeid::new(route.deid.clone(), ts)
            .map_err(|e| (e.dimse_status(), format!("Radguard de-identification: {e}")))?
            .with_cap(route.head_cap);
        let new_uid = route.deid.map_uid(sop_instance);
        let command = set_affected_sop_instance_uid(&raw_command, &new_uid)
            .map_err(|e| (0xC000, format!("Radguard de-identification: command: {e}")))?;
        Ok(DeidMessage {
            message_id,
            context_id,
            sop_class: sop_class.to_string(),
            original_uid: sop_instance.to_string(),
            command,
            stream: Some(stream),
            head_sent: false,
        })
    }

    pub fn push(&mut self, data: &[u8], is_last: bool) -> DeidStep {
        let Some(stream) = self.stream.as_mut() else {
            return DeidStep::Abort("data after the end of a de-identified data set".into());
        };
        let mut out = Vec::new();
        if let Err(e) = stream.push(data, &mut out) {
            return self.fail(e.dimse_status(), e.to_string());
        }
        let mut report = None;
        if is_last {
            let Some(stream) = self.stream.take() else {
                return DeidStep::Abort("de-identification state lost".into());
            };
            match stream.finish(&mut out) {
                Ok(outcome) => {
                    let r = outcome.report;
                    report = Some(DeidSummary {
                        new_sop_instance_uid: r.sop_instance_uid.clone().unwrap_or_default(),
                        uids_replaced: r.uids_replaced,
                        private_removed: r.private_removed,
                        dates_shifted: r.dates_shifted,
                        burned_in_allowed: r.burned_in_allowed.clone(),
                    });
                }
                Err(e) => return self.fail(e.dimse_status(), e.to_string()),
            }
        } else if !self.stream.as_ref().is_some_and(StreamDeid::head_done) {
            return DeidStep::Hold;
        }
        let command = if self.head_sent {
            None
        } else {
            self.head_sent = true;
            Some(std::mem::take(&mut self.command))
        };
        DeidStep::Emit {
            command,
            data: out,
            last: is_last,
            report,
        }
    }

    fn fail(&mut self, status: u16, why: String) -> DeidStep {
        self.stream = None;
        if self.head_sent {
            DeidStep::Abort(format!(
                "de-identification failed after the head went upstream: {why}"
            ))
        } else {
            DeidStep::Refuse {
                status,
                comment: format!("Radguard de-identification: {why}"),
            }
        }
    }
}

/// The upstream's C-STORE-RSP with the client's own SOP Instance UID back in (0000,1000).
pub fn restore_uid(raw_response: &[u8], original_uid: &str) -> Option<Vec<u8>> {
    set_affected_sop_instance_uid(raw_response, original_uid).ok()
}
