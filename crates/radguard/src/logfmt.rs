//! The two log formats of `radguard serve` on stderr, and which one applies ([`choose`]).
//!
//! * JSON ([`JsonLines`], the default when stderr is not a terminal): one object per line,
//!   `{"timestamp","level","target","fields"}` as tracing-subscriber's own JSON format, except
//!   that the gateway's events (target `radguard::event`, whose `event` field is the event
//!   already serialised to JSON) are embedded as objects, not as a string holding JSON — so a
//!   SIEM reads `fields.event.why` directly.
//! * Text ([`TextLines`], the default on a terminal): one readable line per event, `TIME LEVEL
//!   EVENT key=value ...` with the event's scalar fields (its sequence number, clock and nested
//!   facts are left to the JSON format); other lines `TIME LEVEL target: message key=value`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the gateway's event lines (see `radguard_events::EventBus::emit`).
const EVENT_TARGET: &str = "radguard::event";

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// The format in force: the one asked for, else text for a person at a terminal and JSON for
/// anything else (a journal, a file, a log shipper: machines read it).
pub fn choose(asked: Option<LogFormat>, stderr_is_terminal: bool) -> LogFormat {
    match asked {
        Some(f) => f,
        None if stderr_is_terminal => LogFormat::Text,
        None => LogFormat::Json,
    }
}

pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let (mut fields, timestamp) = fields_and_time(event)?;
        // The event's own JSON goes in as it is (its keys in their order: seq, time_ms, event,
        // ...), once it is known to be one JSON object.
        let raw_event = match fields.get("event") {
            Some(Value::String(json))
                if meta.target() == EVENT_TARGET
                    && json.starts_with('{')
                    && serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok() =>
            {
                match fields.remove("event") {
                    Some(Value::String(json)) => Some(json),
                    _ => None,
                }
            }
            _ => None,
        };
        let text = |v: &str| Value::String(v.to_string()).to_string();
        write!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"target\":{},\"fields\":{{",
            text(&timestamp),
            text(meta.level().as_str()),
            text(meta.target())
        )?;
        let mut first = true;
        for (k, v) in &fields {
            if !first {
                writer.write_char(',')?;
            }
            first = false;
            write!(writer, "{}:{v}", text(k))?;
        }
        if let Some(json) = raw_event {
            if !first {
                writer.write_char(',')?;
            }
            write!(writer, "\"event\":{json}")?;
        }
        writeln!(writer, "}}}}")
    }
}

/// The one-line text format for a person at a terminal.
pub struct TextLines;

/// An event's keys that a reader at a terminal does not need (the JSON format keeps them).
const TEXT_SKIPPED: [&str; 3] = ["seq", "time_ms", "event"];

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let (mut fields, timestamp) = fields_and_time(event)?;
        write!(writer, "{timestamp} {:<5} ", meta.level().as_str())?;
        let gateway_event = match fields.get("event") {
            Some(Value::String(json)) if meta.target() == EVENT_TARGET => {
                serde_json::from_str::<Map<String, Value>>(json).ok()
            }
            _ => None,
        };
        if let Some(ev) = gateway_event {
            let kind = ev.get("event").and_then(Value::as_str).unwrap_or("event");
            write!(writer, "{kind}")?;
            for (k, v) in &ev {
                if !TEXT_SKIPPED.contains(&k.as_str()) {
                    write_scalar(&mut writer, k, v)?;
                }
            }
            return writeln!(writer);
        }
        write!(writer, "{}:", meta.target())?;
        if let Some(Value::String(m)) = fields.remove("message") {
            write!(writer, " {m}")?;
        }
        for (k, v) in &fields {
            write_scalar(&mut writer, k, v)?;
        }
        writeln!(writer)
    }
}

/// ` key=value` for a scalar (strings quoted when they hold a space, a quote or `=`, or are
/// empty); nothing for null, arrays and objects.
fn write_scalar(w: &mut Writer<'_>, key: &str, v: &Value) -> fmt::Result {
    match v {
        Value::String(s)
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') =>
        {
            write!(w, " {key}={}", Value::String(s.clone()))
        }
        Value::String(s) => write!(w, " {key}={s}"),
        Value::Number(n) => write!(w, " {key}={n}"),
        Value::Bool(b) => write!(w, " {key}={b}"),
        Value::Null | Value::Array(_) | Value::Object(_) => Ok(()),
    }
}

/// An event's fields as JSON values, and the time now (RFC 3339): what both formats start from.
fn fields_and_time(event: &Event<'_>) -> Result<(Map<String, Value>, String), fmt::Error> {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut timestamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    Ok((fields.0, timestamp))
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text_of<F>(format: F, f: impl FnOnce()) -> Vec<String>
    where
        F: for<'w> FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(format)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().expect("buffer").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        text.lines().map(str::to_string).collect()
    }

    fn lines(f: impl FnOnce()) -> (Vec<String>, Vec<Value>) {
        let raw = text_of(JsonLines, f);
        let parsed = raw
            .iter()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        (raw, parsed)
    }

    #[test]
    fn events_are_embedded_as_objects_and_other_lines_keep_their_fields() {
        let (raw, got) = lines(|| {
            let json = r#"{"seq":7,"event":"association-refused","why":"a \"quoted\" reason"}"#;
            tracing::info!(target: "radguard::event", event = %json);
            tracing::warn!(target: "radguard::audit", lost = 3u64, ok = false, "audit writer fell behind");
            tracing::info!(target: "radguard::event", event = %"not json");
        });
        assert_eq!(got.len(), 3);
        let e = &got[0];
        assert_eq!(e["target"], "radguard::event");
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["fields"]["event"]["event"], "association-refused");
        assert_eq!(e["fields"]["event"]["why"], "a \"quoted\" reason");
        assert_eq!(e["fields"]["event"]["seq"], 7);
        // The line starts with the timestamp and keeps the event's own key order.
        assert!(raw[0].starts_with(r#"{"timestamp":"#), "{}", raw[0]);
        assert!(
            raw[0].contains(r#""event":{"seq":7,"event":"association-refused""#),
            "{}",
            raw[0]
        );
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{e}"
        );
        let w = &got[1];
        assert_eq!(w["level"], "WARN");
        assert_eq!(w["fields"]["message"], "audit writer fell behind");
        assert_eq!(w["fields"]["lost"], 3);
        assert_eq!(w["fields"]["ok"], false);
        // A value that is not JSON stays a string.
        assert_eq!(got[2]["fields"]["event"], "not json");
    }

    #[test]
    fn text_lines_name_the_event_and_its_scalar_fields_on_one_line() {
        let got = text_of(TextLines, || {
            let json = r#"{"seq":7,"time_ms":1765000000000,"event":"association-refused","assoc":12,"calling_ae":"CT01","called_ae":null,"why":"no peer \"x\" matches","tls":{"version":"1.3"}}"#;
            tracing::info!(target: "radguard::event", event = %json);
            tracing::warn!(target: "radguard::audit", lost = 3u64, "audit writer fell behind");
        });
        assert_eq!(got.len(), 2, "{got:?}");
        let e = &got[0];
        // TIME LEVEL EVENT key=value...: RFC 3339 time first.
        let (time, rest) = e.split_once(' ').expect("a time");
        assert!(time.contains('T') && time.ends_with('Z'), "{e}");
        // The fields in the event's key order (serde_json's map: sorted, or as written when
        // another crate turns on its preserve_order): compared as a set.
        let rest = rest
            .strip_prefix("INFO  association-refused ")
            .unwrap_or_else(|| panic!("{e}"));
        let why = r#"why="no peer \"x\" matches""#;
        assert!(rest.contains(why), "{e}");
        let without = rest.replace(why, "");
        let mut others: Vec<&str> = without.split_whitespace().collect();
        others.sort_unstable();
        assert_eq!(others, ["assoc=12", "calling_ae=CT01"], "{e}");
        // Not JSON, and without the event's bookkeeping.
        assert!(serde_json::from_str::<Value>(e).is_err(), "{e}");
        assert!(!e.contains("seq=") && !e.contains("time_ms"), "{e}");
        let w = &got[1];
        assert!(
            w.ends_with("WARN  radguard::audit: audit writer fell behind lost=3"),
            "{w}"
        );
    }

    #[test]
    fn the_flag_wins_else_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(choose(None, true), LogFormat::Text);
        assert_eq!(choose(None, false), LogFormat::Json);
        assert_eq!(choose(Some(LogFormat::Json), true), LogFormat::Json);
        assert_eq!(choose(Some(LogFormat::Text), false), LogFormat::Text);
    }
}
