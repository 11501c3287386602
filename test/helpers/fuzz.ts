/**
 * How the fuzz targets run. The default suite runs each target a small, bounded number of times (a smoke
 * run); `npm run fuzz` (scripts/fuzz.ts) runs every target for a time budget instead and records how many
 * executions each one got. Settings, all optional:
 *
 * - `EBCC_FUZZ_RUNS`: executions per target, instead of each target's smoke default;
 * - `EBCC_FUZZ_SECONDS`: a time budget per target; the target runs until it is spent (overrides the above);
 * - `EBCC_FUZZ_SEED`: replay a failure (fast-check prints the seed and path of every counterexample);
 * - `EBCC_FUZZ_REPORT`: a file that gets one JSON line per target: `{ target, runs, seconds }`.
 */
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';

const env = process.env;
const budgetSeconds = Number(env.EBCC_FUZZ_SECONDS ?? 0);
const fixedRuns = Number(env.EBCC_FUZZ_RUNS ?? 0);
const seed = env.EBCC_FUZZ_SEED === undefined ? undefined : Number(env.EBCC_FUZZ_SEED);

/** The vitest timeout a fuzz target needs: its budget, plus room for the last execution and shrinking. */
export function fuzzTimeout(smokeMs = 30_000): number {
  if (budgetSeconds > 0) return budgetSeconds * 1000 + 120_000;
  if (fixedRuns > 0) return 24 * 3600 * 1000;
  return smokeMs;
}

function parameters<T>(smokeRuns: number): fc.Parameters<T> {
  const base: fc.Parameters<T> = { includeErrorInReport: true, ...(seed === undefined ? {} : { seed }) };
  if (budgetSeconds > 0)
    return {
      ...base,
      numRuns: Number.MAX_SAFE_INTEGER,
      plugins: [fc.interruptAfterTimeLimit(budgetSeconds * 1000) as fc.Plugin<T>],
    };
  return { ...base, numRuns: fixedRuns > 0 ? fixedRuns : smokeRuns };
}

function record(target: string, details: fc.RunDetails<unknown>, started: number): void {
  if (!env.EBCC_FUZZ_REPORT) return;
  const line = { target, runs: details.numRuns, seconds: +((performance.now() - started) / 1000).toFixed(1) };
  appendFileSync(env.EBCC_FUZZ_REPORT, `${JSON.stringify(line)}\n`);
}

/** Runs a synchronous property as one fuzz target; throws fast-check's report (seed, counterexample) on failure. */
export function fuzz<T>(target: string, property: fc.IProperty<T>, smokeRuns: number): void {
  const started = performance.now();
  const details = fc.check(property, parameters<T>(smokeRuns));
  record(target, details as fc.RunDetails<unknown>, started);
  const report = fc.defaultReportMessage(details);
  if (details.failed) throw new Error(report);
}

/** Runs an asynchronous property as one fuzz target. */
export async function fuzzAsync<T>(
  target: string,
  property: fc.IAsyncProperty<T>,
  smokeRuns: number,
): Promise<void> {
  const started = performance.now();
  const details = await fc.check(property, parameters<T>(smokeRuns));
  record(target, details as fc.RunDetails<unknown>, started);
  const report = await fc.asyncDefaultReportMessage(details);
  if (details.failed) throw new Error(report);
}

/** Splits bytes into chunks at arbitrary cut points (as a pipe or socket may deliver them). */
export function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (bytes.length ? c % (bytes.length + 1) : 0)))].sort(
    (a, b) => a - b,
  );
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(bytes.subarray(at, p));
    at = p;
  }
  out.push(bytes.subarray(at));
  return out;
}

/** Mutations of a recorded specimen: bit flips, truncation, splices, duplicated and deleted ranges. */
export function mutationsOf(specimen: Buffer): fc.Arbitrary<Buffer> {
  const n = specimen.length;
  const flipped = fc
    .array(fc.tuple(fc.nat(Math.max(0, n - 1)), fc.integer({ min: 1, max: 255 })), {
      minLength: 1,
      maxLength: 8,
    })
    .map((edits) => {
      const copy = Buffer.from(specimen);
      for (const [at, xor] of edits) if (at < n) copy[at] = copy[at]! ^ xor;
      return copy;
    });
  const truncated = fc.nat(n).map((k) => Buffer.from(specimen.subarray(0, k)));
  const spliced = fc
    .tuple(fc.nat(n), fc.uint8Array({ minLength: 1, maxLength: 64 }))
    .map(([at, junk]) => Buffer.concat([specimen.subarray(0, at), junk, specimen.subarray(at)]));
  const deleted = fc
    .tuple(fc.nat(n), fc.integer({ min: 1, max: 64 }))
    .map(([at, len]) => Buffer.concat([specimen.subarray(0, at), specimen.subarray(at + len)]));
  const duplicated = fc
    .tuple(fc.nat(n), fc.integer({ min: 1, max: 64 }))
    .map(([at, len]) =>
      Buffer.concat([
        specimen.subarray(0, at + len),
        specimen.subarray(at, at + len),
        specimen.subarray(at + len),
      ]),
    );
  const overwritten = fc
    .tuple(fc.nat(n), fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0x1f, 0x3b, 0x5f))
    .map(([at, byte]) => {
      const copy = Buffer.from(specimen);
      if (at < n) copy[at] = byte;
      return copy;
    });
  return fc.oneof(flipped, truncated, spliced, deleted, duplicated, overwritten);
}
