//! The per-route inspection pipeline, built once when an association is admitted: the
//! data-set firewall's level, the integrity ledger (routes with `origin = true`), the
//! de-identification (routes with `[route.deid]`). For each request it sets up the inspections
//! its data set gets on the way: the firewall, head sniffing (patient and study for the audit
//! record), the fingerprint, the identifier kept with a query's audit record.

use std::sync::Arc;

use radguard_dicom::dimse::Request;
use radguard_dicom::head::{HeadFacts, HeadSniffer};
use radguard_dicom::limits::Limits;
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::validate::{Level, Validator, Violation};
use radguard_dicom::{AeTitle, CommandField};
use radguard_events::{AlertKind, AssocId, Event, EventBus, Subject};
use radguard_ledger::{Fingerprinter, Ledger};
use radguard_policy::{OriginRoute, Policy};

use crate::gate::Contexts;
use crate::shared::Shared;
use crate::tls::DeidRoute;

/// What inspects the data sets of one association, decided at admission.
pub struct Pipeline {
    assoc: AssocId,
    bus: EventBus,
    firewall: Level,
    origin: Option<Origin>,
    deid: Option<DeidRoute>,
}

/// An origin route: the ledger its instances' fingerprints go into, and its conflict policy.
pub struct Origin {
    pub ledger: Arc<Ledger>,
    pub route: OriginRoute,
}

impl Pipeline {
    /// The pipeline of the route to `called` under `policy` (the one the association was
    /// admitted under) and the TLS state (de-identification) in force.
    pub fn for_route(shared: &Shared, assoc: AssocId, policy: &Policy, called: &AeTitle) -> Self {
        let entry = policy.route_entry(called);
        Pipeline {
            assoc,
            bus: shared.bus.clone(),
            firewall: entry.map_or(Level::Safe, |r| r.firewall),
            origin: entry
                .and_then(|r| r.origin)
                .zip(shared.ledger.clone())
                .map(|(route, ledger)| Origin { ledger, route }),
            deid: shared.tls.borrow().deid.get(called).cloned(),
        }
    }

    /// The data-set firewall's level on this route.
    pub fn firewall(&self) -> Level {
        self.firewall
    }

    /// The integrity ledger, on an origin route.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The de-identification, on a de-identifying route.
    pub fn deid(&self) -> Option<&DeidRoute> {
        self.deid.as_ref()
    }

    /// A validator for a data set on this presentation context. A transfer syntax UID that is
    /// not a UID cannot have been negotiated; the grammar reads a private one as Explicit VR
    /// Little Endian (PS3.5 §10), and so does the firewall.
    pub fn validator(&self, contexts: &Contexts, context_id: u8, field: CommandField) -> Validator {
        let ts = contexts
            .get(context_id)
            .and_then(|(_, t)| TransferSyntax::from_uid(t).ok())
            .unwrap_or_else(TransferSyntax::explicit_vr_le);
        Validator::new(&ts, firewall_limits(field), self.firewall)
    }

    /// The firewall on a data set that belongs to `of`.
    pub fn checking(&self, contexts: &Contexts, of: Subjected) -> Checking {
        Checking {
            validator: self.validator(contexts, of.context_id, of.field),
            of,
        }
    }

    /// The inspections of a request the gate passed, whose request event is `event`: it is
    /// emitted now, or (a query or retrieve) once its identifier is complete, with the patient
    /// and study it names.
    pub fn inspect(
        &self,
        contexts: &Contexts,
        context_id: u8,
        request: &Request,
        event: Event,
    ) -> Inspections {
        let ts = contexts
            .get(context_id)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let sop_instance = request.sop_instance.as_ref().map(|u| u.to_string());
        let firewall = request.has_data_set.then(|| {
            let of = Subjected {
                context_id,
                field: request.field,
                message_id: request.message_id,
                sop_class: request.sop_class.as_ref().map(|u| u.to_string()),
                sop_instance: sop_instance.clone(),
            };
            self.checking(contexts, of)
        });
        let is_store = request.field == CommandField::CStoreRq;
        let identifier = if request.has_data_set && !is_store {
            Some(Identifying {
                event,
                transfer_syntax: ts.clone(),
                bytes: Vec::new(),
                truncated: false,
            })
        } else {
            self.bus.emit(event);
            None
        };
        let fingerprint = match (&self.origin, is_store) {
            (Some(_), true) => {
                let inst = sop_instance.unwrap_or_default();
                match Fingerprinter::new(&ts) {
                    Ok(fp) => Some(Fingerprinting {
                        message_id: request.message_id,
                        sop_instance: inst,
                        fp,
                    }),
                    Err(e) => {
                        self.bus.emit(Event::SecurityAlert {
                            assoc: Some(self.assoc),
                            kind: AlertKind::InstanceConflict,
                            source: None,
                            detail: format!("{inst} relayed without a fingerprint: {e}"),
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        let head = request.has_data_set.then(|| Sniffing {
            message_id: request.message_id,
            sniffer: sniffer_for(&ts),
        });
        Inspections {
            firewall,
            head,
            fingerprint,
            identifier,
            guard: None,
        }
    }

    /// Feeds a fragment to the firewall. Returns the refused deviation, if any; at the end of
    /// the data set, deviations the level lets through are reported (as an alert at level
    /// `log`).
    pub fn check(
        &self,
        c: &mut Option<Checking>,
        data: &[u8],
        is_last: bool,
    ) -> Option<(Subjected, Violation)> {
        let checking = c.as_mut()?;
        if let Some(v) = checking.validator.feed(data).cloned() {
            return c.take().map(|k| (k.of, v));
        }
        if !is_last {
            return None;
        }
        let Checking { validator, of } = c.take()?;
        let outcome = validator.finish();
        if let Some(v) = outcome.refusal {
            return Some((of, v));
        }
        self.report_tolerated(&of, &outcome.found);
        None
    }

    /// Deviations found in a data set that was relayed: at level `log` an alert (what `safe`
    /// or `strict` would have refused), otherwise a debug line (the benign deviations `safe`
    /// tolerates, documented in docs/firewall.md).
    fn report_tolerated(&self, of: &Subjected, found: &[Violation]) {
        let Some(first) = found.first() else {
            return;
        };
        if self.firewall == Level::Log {
            self.bus.emit(Event::SecurityAlert {
                assoc: Some(self.assoc),
                kind: AlertKind::MalformedDataSet,
                source: None,
                detail: format!(
                    "{:?} {} relayed (firewall = log): {first} ({} deviation(s))",
                    of.field,
                    of.name(),
                    found.len()
                ),
            });
        } else {
            tracing::debug!(assoc = %self.assoc, "{:?} {}: tolerated: {first}", of.field, of.name());
        }
    }
}

/// The inspections of one data set, each until it is done with it.
#[derive(Default)]
pub struct Inspections {
    /// The data-set firewall.
    pub firewall: Option<Checking>,
    /// The identifying head, for the response's audit record.
    pub head: Option<Sniffing>,
    /// The C-STORE's fingerprint (origin routes only).
    pub fingerprint: Option<Fingerprinting>,
    /// The query/retrieve's identifier, for its request's audit record.
    pub identifier: Option<Identifying>,
    /// A protocol, approval or dose report the guard judges (set by the relay).
    pub guard: Option<crate::guard::Reading>,
}

/// The data-set firewall on one data set.
pub struct Checking {
    pub validator: Validator,
    pub of: Subjected,
}

/// The request (or response) a data set belongs to: how a refusal of it is answered.
pub struct Subjected {
    pub context_id: u8,
    pub field: CommandField,
    pub message_id: u16,
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
}

impl Subjected {
    pub fn name(&self) -> String {
        self.sop_instance
            .clone()
            .unwrap_or_else(|| format!("message {}", self.message_id))
    }
}

/// Identifiers are small: the firewall reads them under [`Limits::QUERY`], bulk data under
/// [`Limits::GATEWAY`].
fn firewall_limits(field: CommandField) -> Limits {
    match field {
        CommandField::CStoreRq | CommandField::CStoreRsp => Limits::GATEWAY,
        _ => Limits::QUERY,
    }
}

/// The Error Comment of a firewall refusal (LO: at most 64 characters).
pub fn firewall_comment(v: &Violation) -> String {
    format!("Radguard firewall: {}", v.summary())
}

/// Query/retrieve identifiers kept for the audit record.
const IDENTIFIER_LIMIT: usize = 64 * 1024;

/// A query or retrieve whose identifier is being read; its request event waits for it.
pub struct Identifying {
    event: Event,
    transfer_syntax: String,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Identifying {
    /// Keeps a fragment of the identifier (up to a bound).
    pub fn feed(&mut self, data: &[u8]) {
        let room = IDENTIFIER_LIMIT.saturating_sub(self.bytes.len());
        self.truncated |= data.len() > room;
        self.bytes.extend(data.iter().take(room));
    }

    /// The request event, with the identifier and the patient and study it names.
    pub fn finish(self) -> Event {
        let mut event = self.event;
        let facts = sniffer_for(&self.transfer_syntax).map(|mut s| {
            s.feed(&self.bytes);
            s.finish()
        });
        if let Event::DimseRequest {
            subject,
            identifier,
            ..
        } = &mut event
        {
            *identifier = Some(radguard_events::Identifier {
                transfer_syntax: self.transfer_syntax,
                level: facts.as_ref().and_then(|f| f.query_level.clone()),
                dataset: self.bytes,
                truncated: self.truncated,
            });
            *subject = facts.map(subject_of);
        }
        event
    }
}

/// The C-STORE being fingerprinted (origin routes only).
pub struct Fingerprinting {
    pub message_id: u16,
    pub sop_instance: String,
    pub fp: Fingerprinter,
}

/// The data set of the request being relayed: its identifying head is sniffed on the way.
pub struct Sniffing {
    message_id: u16,
    sniffer: Option<HeadSniffer>,
}

impl Sniffing {
    /// Feeds a fragment; once the head is read (or at the end of the data set), returns the
    /// request's Message ID and the subject found.
    pub fn feed(&mut self, data: &[u8], is_last: bool) -> Option<(u16, Option<Subject>)> {
        let done = self.sniffer.as_mut().is_none_or(|s| s.feed(data));
        if !(done || is_last) {
            return None;
        }
        let facts = self.sniffer.take().map(|s| subject_of(s.finish()));
        Some((self.message_id, facts))
    }
}

fn subject_of(f: HeadFacts) -> Subject {
    Subject {
        patient_id: f.patient_id,
        patient_name: f.patient_name,
        study_uid: f.study_uid,
        series_uid: f.series_uid,
        accession_number: f.accession_number,
    }
}

/// The head sniffer for a data set in this transfer syntax (any valid transfer syntax UID:
/// big endian and deflated heads are read through the one grammar too).
fn sniffer_for(ts: &str) -> Option<HeadSniffer> {
    HeadSniffer::for_uid(ts)
}
