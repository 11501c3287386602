import { describe, expect, it } from 'vitest';
import { benchmarkEvidence } from '../runtime/evidence/bench.ts';

describe('evidence micro-benchmark', () => {
  it('prints per-execution signing costs (numbers only, no timing assertions)', () => {
    const result = benchmarkEvidence({ iterations: 100, rounds: 5 });
    console.log(
      `evidence bench (4 KiB request + 4 KiB response, µs min/median): ` +
        `signExecution ${result.signExecution.minUs}/${result.signExecution.medianUs}, ` +
        `hash ${result.hash.minUs}/${result.hash.medianUs}, ` +
        `decode ${result.decode.minUs}/${result.decode.medianUs}, ` +
        `verify ${result.verify.minUs}/${result.verify.medianUs}, ` +
        `evidence ${result.evidenceBytes} bytes`,
    );
    expect(result.evidenceBytes).toBeGreaterThan(0);
  });
});
