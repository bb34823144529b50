//! A count over a sliding window, in bounded memory: events within one step (a 64th of the
//! window) share one entry, so a key holds at most 65 entries however many events it gets.

use std::collections::VecDeque;

/// Steps per window: the window slides in steps of `window / STEPS`.
const STEPS: u64 = 64;

/// Counts in the last `window_ms`, and when the rule last fired for this key.
#[derive(Debug, Default, Clone)]
pub struct Window {
    entries: VecDeque<(u64, u64)>,
    total: u64,
    last_fired: Option<u64>,
}

impl Window {
    /// Drops what is older than the window ending at `now`.
    fn expire(&mut self, now: u64, window_ms: u64) {
        while let Some(&(t, n)) = self.entries.front() {
            if now.saturating_sub(t) >= window_ms {
                self.entries.pop_front();
                self.total = self.total.saturating_sub(n);
            } else {
                break;
            }
        }
    }

    /// Adds `n` at `now`; returns the count in the window ending at `now`.
    pub fn add(&mut self, now: u64, n: u64, window_ms: u64) -> u64 {
        self.expire(now, window_ms);
        let step = (window_ms / STEPS).max(1);
        match self.entries.back_mut() {
            Some((t, count)) if now.saturating_sub(*t) < step => {
                *count = count.saturating_add(n);
            }
            _ => self.entries.push_back((now, n)),
        }
        self.total = self.total.saturating_add(n);
        self.total
    }

    /// Whether a count of `total` at `now` fires: at or over the threshold, and the rule has
    /// not fired for this key within the last window (one detection per key per window while
    /// the activity goes on). Records the firing.
    pub fn fires(&mut self, now: u64, total: u64, threshold: u64, window_ms: u64) -> bool {
        let quiet = self
            .last_fired
            .is_none_or(|t| now.saturating_sub(t) >= window_ms);
        if total >= threshold && quiet {
            self.last_fired = Some(now);
            true
        } else {
            false
        }
    }

    /// Entries held (bounded by the step count).
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inside_the_window_only() {
        let mut w = Window::default();
        assert_eq!(w.add(0, 1, 60_000), 1);
        assert_eq!(w.add(30_000, 1, 60_000), 2);
        // The first one is 60 s old: out.
        assert_eq!(w.add(60_000, 1, 60_000), 2);
        assert_eq!(w.add(200_000, 5, 60_000), 5);
    }

    #[test]
    fn memory_is_bounded_by_the_steps() {
        let mut w = Window::default();
        for t in 0..1_000_000u64 {
            w.add(t, 1, 60_000);
        }
        assert!(w.entries() <= STEPS as usize + 1, "{}", w.entries());
    }

    #[test]
    fn fires_once_per_window() {
        let mut w = Window::default();
        assert!(!w.fires(0, 9, 10, 1000));
        assert!(w.fires(1, 10, 10, 1000));
        assert!(!w.fires(500, 11, 10, 1000));
        assert!(w.fires(1001, 10, 10, 1000));
    }
}
