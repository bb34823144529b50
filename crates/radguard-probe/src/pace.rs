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
        self.take(Instant::now());
    }

    /// Takes the slot at `now` (which the caller has waited for: `delay_at(now)` is zero).
    fn take(&mut self, now: Instant) {
        self.last = Some(now);
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

    // On explicit instants, so that a busy machine cannot change what is checked.
    #[test]
    fn spaces_slots() {
        let mut p = Pacer::new(4.0);
        assert_eq!(p.interval(), Duration::from_millis(250));
        let t0 = Instant::now();
        assert_eq!(
            p.delay_at(t0),
            Duration::ZERO,
            "the first connection waits for nothing"
        );
        p.take(t0);
        assert_eq!(p.delay_at(t0), Duration::from_millis(250));
        assert_eq!(
            p.delay_at(t0 + Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        assert_eq!(p.delay_at(t0 + Duration::from_millis(250)), Duration::ZERO);
        assert_eq!(p.delay_at(t0 + Duration::from_secs(3)), Duration::ZERO);
        // A late slot counts from when it was taken, not from when it was due: no burst to
        // catch up.
        let late = t0 + Duration::from_secs(3);
        p.take(late);
        assert_eq!(p.delay_at(late), Duration::from_millis(250));
        assert_eq!(p.count(), 2);
    }

    #[test]
    fn wait_sleeps_until_the_slot() {
        let mut p = Pacer::new(20.0);
        let t0 = Instant::now();
        p.wait();
        p.wait();
        // Sleeping is never shorter than asked: two slots are at least one interval apart.
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(p.count(), 2);
    }

    #[test]
    fn nonsense_rates_fall_back_to_one_per_second() {
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Pacer::new(r).interval(), Duration::from_secs(1));
        }
    }
}
