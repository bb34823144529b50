//! The JSON log format: one object per line, `{"timestamp","level","target","fields"}` as
//! tracing-subscriber's own JSON format, except that the gateway's events (target
//! `radguard::event`, whose `event` field is the event already serialised to JSON) are embedded
//! as objects, not as a string holding JSON — so a SIEM reads `fields.event.why` directly.

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
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
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
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
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

    fn lines(f: impl FnOnce()) -> (Vec<String>, Vec<Value>) {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().expect("buffer").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        let raw: Vec<String> = text.lines().map(str::to_string).collect();
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
}
