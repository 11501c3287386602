/**
 * Interleaved measurement: every round runs each variant once, in an order rotated from round to round
 * (A B C, B C A, C A B, ...), so that drift over time (thermal, page cache, background work, a growing
 * database) is spread evenly over the variants instead of landing on whichever ran last.
 */
export interface Variant<T> {
  name: string;
  /** One measured operation. It must throw when the measurement could not be taken. */
  run: (round: number) => Promise<T>;
}

export interface RoundOptions {
  warmupRounds: number;
  rounds: number;
  /** Called between rounds (e.g. for progress output); never during a measured operation. */
  onRound?: (round: number) => void;
}

export async function interleaved<T>(
  variants: Variant<T>[],
  options: RoundOptions,
): Promise<Map<string, { round: number; sample: T }[]>> {
  const results = new Map<string, { round: number; sample: T }[]>(variants.map((v) => [v.name, []]));
  for (let w = 0; w < options.warmupRounds; w++) {
    for (const variant of rotate(variants, w)) await variant.run(-1 - w);
  }
  for (let round = 0; round < options.rounds; round++) {
    for (const variant of rotate(variants, round)) {
      results.get(variant.name)!.push({ round, sample: await variant.run(round) });
    }
    options.onRound?.(round);
  }
  return results;
}

export function rotate<T>(items: readonly T[], by: number): T[] {
  const k = ((by % items.length) + items.length) % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
