/** Order statistics over latency samples (milliseconds). Every function refuses empty or non-finite input. */

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

function checked(samples: readonly number[], what: string): number[] {
  if (samples.length === 0) throw new Error(`no samples for ${what}: the measurement was not taken`);
  for (const s of samples) {
    if (!Number.isFinite(s) || s < 0) throw new Error(`invalid sample ${s} for ${what}`);
  }
  return [...samples].sort((a, b) => a - b);
}

/** Linear interpolation between closest ranks (Hyndman-Fan type 7, as numpy's default). */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 1) return sorted[0]!;
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  const weight = position - lower;
  return sorted[lower]! * (1 - weight) + sorted[upper]! * weight;
}

export function quantile(samples: readonly number[], q: number, what = 'a quantile'): number {
  return quantileSorted(checked(samples, what), q);
}

export const median = (samples: readonly number[], what = 'a median'): number => quantile(samples, 0.5, what);

export function summarize(samples: readonly number[], what: string): Summary {
  const sorted = checked(samples, what);
  return {
    n: sorted.length,
    min: sorted[0]!,
    p50: quantileSorted(sorted, 0.5),
    p90: quantileSorted(sorted, 0.9),
    p99: quantileSorted(sorted, 0.99),
    max: sorted[sorted.length - 1]!,
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
  };
}

/** A small deterministic PRNG (mulberry32) so that bootstrap intervals are reproducible for given samples. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function resampleMedian(samples: readonly number[], random: () => number): number {
  const draw = new Float64Array(samples.length);
  for (let i = 0; i < draw.length; i++) draw[i] = samples[Math.floor(random() * samples.length)]!;
  draw.sort();
  return quantileSorted(draw as unknown as number[], 0.5);
}

/**
 * A percentile-bootstrap 95% interval for f(median(a), median(b)), resampling both sides independently.
 * Used for the ratio and the difference of medians.
 */
export function bootstrapInterval(
  a: readonly number[],
  b: readonly number[],
  f: (medianA: number, medianB: number) => number,
  iterations = 2000,
): [number, number] {
  checked(a, 'bootstrap (a)');
  checked(b, 'bootstrap (b)');
  const random = prng(0x5eed);
  const values = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) values[i] = f(resampleMedian(a, random), resampleMedian(b, random));
  values.sort();
  const sorted = values as unknown as number[];
  return [quantileSorted(sorted, 0.025), quantileSorted(sorted, 0.975)];
}
