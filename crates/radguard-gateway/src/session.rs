//! The session loop on the client's side of an association, one for the relay and the vault:
//! read a PDU (PS3.8 §9.3), split a P-DATA-TF into its PDVs, assemble commands whole, judge
//! each request under the policy in force ([`crate::gate`]), and hand what was judged to the
//! [`Session`]: the relay forwards it upstream, the vault stores or answers it. What the
//! upstream sends back is the relay's own business.

use radguard_dicom::assembler::{Assembler, Step};
use radguard_dicom::dimse::Command;
use radguard_dicom::pdu::{pdvs, AbortReason, PduType};
use radguard_dicom::CommandField;
use radguard_policy::Admission;

use crate::gate::{judge, Contexts, Verdict};
use crate::io::{read_idle, Activity, BoxRead, IoError};
use crate::reader::{Frame, PduReader};
use crate::shared::Shared;

/// What one kind of session does with the client's PDUs; every method but
/// [`Session::response`] may end the session with its `End`.
pub(crate) trait Session {
    /// How the session ended.
    type End;

    /// Every PDU read, first (byte counts, state checks).
    async fn received(&mut self, frame: &Frame) -> Result<(), Self::End>;

    /// Nothing more is buffered: the loop is about to wait for the client.
    async fn before_wait(&mut self) -> Result<(), Self::End> {
        Ok(())
    }

    /// Resolves when something other than the client needs the session while it waits for
    /// the client (the relay: its upstream was lost). Cancel-safe; never, by default.
    async fn interrupted(&self) {
        std::future::pending().await
    }

    /// Handles what [`Session::interrupted`] announced.
    async fn interrupt(&mut self) -> Result<(), Self::End> {
        Ok(())
    }

    /// The client's side failed (framing error, idle timeout, connection lost).
    async fn read_failed(&mut self, e: IoError) -> Self::End;

    /// A PDU other than P-DATA-TF (release, abort, anything unexpected).
    async fn control(&mut self, frame: Frame) -> Result<(), Self::End>;

    /// The PDVs of a P-DATA-TF do not parse or assemble (PS3.8 §9.3.5; PS3.7 Annex E): the
    /// A-ABORT reason and the error.
    async fn malformed(&mut self, reason: AbortReason, error: String) -> Self::End;

    /// A data set fragment of the current message: the `pdv`-th PDV of the current PDU.
    async fn data(&mut self, pdv: usize, data: &[u8], is_last: bool) -> Result<(), Self::End>;

    /// A whole response command from the client: `None` when the session took it (the relay:
    /// an answer to a request the upstream sent); otherwise it is judged like any command.
    fn response(&mut self, _context_id: u8, raw: Vec<u8>, _command: &Command) -> Option<Vec<u8>> {
        Some(raw)
    }

    /// A whole command the gate judged: what it becomes is the session's.
    async fn judged(
        &mut self,
        context_id: u8,
        raw: Vec<u8>,
        verdict: Verdict,
    ) -> Result<(), Self::End>;

    /// Every PDV of a P-DATA-TF was handed over (`pdvs` of them).
    async fn pdu_done(&mut self, _frame: Frame, _pdvs: usize) -> Result<(), Self::End> {
        Ok(())
    }
}

/// What requests are judged against: the association's admission and accepted contexts; the
/// policy is the one in force at each request.
pub(crate) struct Gate<'a> {
    pub shared: &'a Shared,
    pub admission: &'a Admission,
    pub contexts: &'a Contexts,
}

/// Runs the client's side of a session until `session` ends it.
pub(crate) async fn run<S: Session>(
    gate: Gate<'_>,
    reader: &mut PduReader<BoxRead>,
    activity: &Activity,
    session: &mut S,
) -> S::End {
    match serve(gate, reader, activity, session).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

async fn serve<S: Session>(
    gate: Gate<'_>,
    reader: &mut PduReader<BoxRead>,
    activity: &Activity,
    session: &mut S,
) -> Result<std::convert::Infallible, S::End> {
    let idle = gate.shared.settings.idle_timeout;
    let mut asm = Assembler::new();
    loop {
        let next = match reader.try_next() {
            Some(r) => r.map_err(IoError::Read),
            None => {
                session.before_wait().await?;
                tokio::select! {
                    r = read_idle(reader, activity, idle) => r,
                    () = session.interrupted() => {
                        session.interrupt().await?;
                        continue;
                    }
                }
            }
        };
        let frame = match next {
            Ok(f) => f,
            Err(e) => return Err(session.read_failed(e).await),
        };
        session.received(&frame).await?;
        if frame.ty != PduType::PData {
            session.control(frame).await?;
            continue;
        }
        let items = match pdvs(frame.body()) {
            Ok(v) => v,
            Err(e) => return Err(session.malformed(e.abort_reason(), e.to_string()).await),
        };
        let n_items = items.len();
        for (index, pdv) in items.into_iter().enumerate() {
            let step = match asm.push(pdv) {
                Ok(s) => s,
                Err(e) => {
                    let reason = AbortReason::UnexpectedPduParameter;
                    return Err(session.malformed(reason, e.to_string()).await);
                }
            };
            match step {
                Step::CommandPartial => {}
                Step::Data { data, is_last, .. } => session.data(index, data, is_last).await?,
                Step::Command {
                    context_id,
                    raw,
                    command,
                } => {
                    let raw = if command
                        .command_field()
                        .is_some_and(CommandField::is_response)
                    {
                        match session.response(context_id, raw, &command) {
                            Some(raw) => raw,
                            None => continue,
                        }
                    } else {
                        raw
                    };
                    // The policy in force now, not the one the association was admitted
                    // under: a reload that removes or narrows the peer reaches its next
                    // request.
                    let policy = gate.shared.policy_now();
                    let verdict =
                        judge(&policy, gate.admission, gate.contexts, context_id, &command);
                    session.judged(context_id, raw, verdict).await?;
                }
            }
        }
        session.pdu_done(frame, n_items).await?;
    }
}
