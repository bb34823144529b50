//! The rate limit: a clinical device must never be overloaded by its own check. Every TCP
//! connection the probe opens (DICOM association or TLS handshake) first waits for its slot;
//! slots are at least `1 / rate` seconds apart, for the whole run (all targets), and nothing
//! runs in parallel.

use std::time::{Duration, Instant};

/// Spaces connection attempts at least `interval` apart.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    last: Option<Instant>,
    count: u32,
}

impl Pacer {
    /// `rate`: connections per second (checked by the caller: finite, > 0).
    pub fn new(rate: f64) -> Pacer {
        let secs = if rate.is_finite() && rate > 0.0 {
            1.0 / rate
        } else {
            1.0
        };
        Pacer {
            interval: Duration::from_secs_f64(secs),
            last: None,
            count: 0,
        }
    }

    /// How long to wait at `now` before the next connection may start.
    pub fn delay_at(&self, now: Instant) -> Duration {
        match self.last {
            Some(last) => (last + self.interval).saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    /// Blocks until the next slot, then takes it.
    pub fn wait(&mut self) {
        let d = self.delay_at(Instant::now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
        self.last = Some(Instant::now());
        self.count += 1;
    }

    /// Connections started so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_slots() {
        let mut p = Pacer::new(4.0);
        assert_eq!(p.interval(), Duration::from_millis(250));
        let t0 = Instant::now();
        assert_eq!(p.delay_at(t0), Duration::ZERO);
        p.wait();
        let d = p.delay_at(Instant::now());
        assert!(d > Duration::from_millis(200) && d <= Duration::from_millis(250));
        p.wait();
        assert!(t0.elapsed() >= Duration::from_millis(250));
        assert_eq!(p.count(), 2);
    }
}
