/**
 * Latency histogram with logarithmic buckets (32 per doubling, about 2% wide), cheap enough to
 * record every call on the client and mergeable across worker processes.
 */
const PER_DOUBLING = 32;
const BUCKETS = 32 * PER_DOUBLING; // up to 2^32 µs

export class Histogram {
  readonly counts: Float64Array;
  count = 0;
  max = 0;

  constructor(counts?: ArrayLike<number>) {
    this.counts = new Float64Array(BUCKETS);
    if (counts) {
      this.counts.set(counts);
      for (let i = 0; i < BUCKETS; i++) this.count += this.counts[i];
    }
  }

  /** `us`: microseconds. */
  record(us: number): void {
    let i = Math.floor(Math.log2(1 + us) * PER_DOUBLING);
    if (i >= BUCKETS) i = BUCKETS - 1;
    this.counts[i]++;
    this.count++;
    if (us > this.max) this.max = us;
  }

  merge(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    if (other.max > this.max) this.max = other.max;
  }

  /** Value at quantile q (0..1), in µs: the geometric middle of its bucket. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(this.max, 2 ** ((i + 0.5) / PER_DOUBLING) - 1);
    }
    return this.max;
  }

  /** Sparse form for IPC and JSON: [bucket, count] pairs. */
  toSparse(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] > 0) out.push([i, this.counts[i]]);
    return out;
  }

  static fromSparse(pairs: Array<[number, number]>, max: number): Histogram {
    const h = new Histogram();
    for (const [i, n] of pairs) {
      h.counts[i] += n;
      h.count += n;
    }
    h.max = max;
    return h;
  }
}
