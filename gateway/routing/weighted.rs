//! A weighted split across a route's destinations that is exact, not
//! random: the smooth weighted round robin of nginx, laid out once at load
//! time as a table of destination indices, which requests walk with one
//! atomic counter. Over every full turn of the table each destination gets
//! exactly its share, interleaved as evenly as the weights allow (90/10
//! sends one request in ten to the second destination, never ten in a row).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest table: weights whose reduced sum is larger are scaled to
/// this sum (largest remainder), keeping the split within 0.01%.
pub const MAX_TURN: u64 = 10_000;

/// Picks a destination index per request, in the table's order.
#[derive(Debug)]
pub struct WeightedPicker {
    /// Destination indices, one turn of the smooth weighted round robin.
    turn: Box<[u16]>,
    next: AtomicUsize,
}

impl WeightedPicker {
    /// `weights[i]` is destination `i`'s weight; zero weights get nothing.
    /// `None` when no weight is positive or there are more than 65,536
    /// destinations.
    pub fn new(weights: &[u64]) -> Option<WeightedPicker> {
        if weights.len() > usize::from(u16::MAX) + 1 || weights.iter().all(|&w| w == 0) {
            return None;
        }
        let shares = reduce(weights);
        Some(WeightedPicker {
            turn: smooth_round_robin(&shares).into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// The index of the destination for the next request.
    pub fn pick(&self) -> usize {
        match self.turn.len() {
            1 => usize::from(self.turn[0]),
            len => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                usize::from(self.turn[n % len])
            }
        }
    }

    /// How many requests in a full turn go to each destination.
    pub fn shares(&self, destinations: usize) -> Vec<usize> {
        let mut shares = vec![0; destinations];
        for &i in self.turn.iter() {
            if let Some(s) = shares.get_mut(usize::from(i)) {
                *s += 1;
            }
        }
        shares
    }
}

/// The weights divided by their greatest common divisor and, if their sum
/// is still over `MAX_TURN`, scaled down to it (largest remainder).
fn reduce(weights: &[u64]) -> Vec<u64> {
    let gcd = weights
        .iter()
        .copied()
        .filter(|&w| w > 0)
        .fold(0, gcd)
        .max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / gcd).collect();
    let total: u128 = reduced.iter().map(|&w| u128::from(w)).sum();
    if total <= u128::from(MAX_TURN) {
        return reduced;
    }
    let target = u128::from(MAX_TURN);
    let mut scaled: Vec<u64> = Vec::with_capacity(reduced.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(reduced.len());
    for (i, &w) in reduced.iter().enumerate() {
        let exact = u128::from(w) * target;
        // Each quotient is at most `target`, so it fits.
        scaled.push(u64::try_from(exact / total).unwrap_or(MAX_TURN));
        remainders.push((exact % total, i));
    }
    let mut left = MAX_TURN.saturating_sub(scaled.iter().sum());
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        if reduced[i] > 0 {
            scaled[i] += 1;
            left -= 1;
        }
    }
    scaled
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One turn of nginx's smooth weighted round robin over `weights` (their
/// sum is at most `MAX_TURN`, and there are at most 65,536 of them).
fn smooth_round_robin(weights: &[u64]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut turn = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        turn.push(u16::try_from(best).unwrap_or(0));
    }
    turn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(picker: &WeightedPicker, n: usize, destinations: usize) -> Vec<usize> {
        let mut counts = vec![0; destinations];
        for _ in 0..n {
            counts[picker.pick()] += 1;
        }
        counts
    }

    #[test]
    fn a_ninety_ten_split_is_exact_and_interleaved() {
        let picker = WeightedPicker::new(&[90, 10]).unwrap();
        assert_eq!(counts(&picker, 10_000, 2), vec![9000, 1000]);
        // Never two requests in a row to the 10% destination.
        let picker = WeightedPicker::new(&[90, 10]).unwrap();
        let seq: Vec<usize> = (0..100).map(|_| picker.pick()).collect();
        assert!(seq.windows(2).all(|w| w != [1, 1]));
    }

    #[test]
    fn zero_weights_get_nothing_and_all_zero_is_refused() {
        let picker = WeightedPicker::new(&[0, 3, 1]).unwrap();
        assert_eq!(counts(&picker, 400, 3), vec![0, 300, 100]);
        assert!(WeightedPicker::new(&[0, 0]).is_none());
        assert!(WeightedPicker::new(&[]).is_none());
    }

    #[test]
    fn huge_weights_are_scaled_to_a_bounded_table() {
        let picker = WeightedPicker::new(&[u64::from(u32::MAX), 1, 3_000_000_000]).unwrap();
        assert_eq!(picker.turn.len(), MAX_TURN as usize);
        let shares = picker.shares(3);
        assert_eq!(shares.iter().sum::<usize>(), MAX_TURN as usize);
        // 4294967295 : 1 : 3000000000 is 5887.6 : 0.0 : 4112.4 in 10,000;
        // the one left over goes to the largest remainder.
        assert_eq!(shares, vec![5888, 0, 4112]);
    }

    #[test]
    fn one_destination_always_wins() {
        let picker = WeightedPicker::new(&[100]).unwrap();
        assert!((0..10).all(|_| picker.pick() == 0));
    }
}
