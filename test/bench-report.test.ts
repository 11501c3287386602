import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateDocs, judgeTargets } from '../bench/lib/generate.ts';
import { formatCsv, mergeRows, parseCsv, readCsv } from '../bench/lib/results.ts';
import { tempDir } from './helpers/env.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'bench-results.csv');

const TEMPLATE = `# Benchmarks

Prose that must survive regeneration.

{{targets}}

{{runs}}

## Stage

{{table:stage}}

{{plot:stage-phases}}

## Throughput

{{table:throughput}}

{{plot:throughput}}

## Density

{{table:density}}

{{plot:density-memory}}
`;

describe('benchmark report generator (CSV to markdown and SVG)', () => {
  it('writes the template prose, every fixture row, the target verdicts and the plots', async () => {
    const rows = readCsv(FIXTURE);
    const dir = await tempDir();
    const markdownPath = join(dir, 'benchmarks.md');
    const generated = await generateDocs({
      rows,
      template: TEMPLATE,
      markdownPath,
      plotDir: join(dir, 'bench'),
    });
    const { plots } = generated;
    let { markdown } = generated;
    expect(await readFile(markdownPath, 'utf8')).toBe(markdown);
    // The page is prettier-formatted (aligned tables): compare with the padding collapsed.
    markdown = markdown.replace(/ {2,}/g, ' ').replace(/-{3,}/g, '---');
    expect(markdown).toContain('Prose that must survive regeneration.');
    expect(markdown).not.toMatch(/\{\{/);
    // Every quantity/variant of the fixture appears in its benchmark's table.
    expect(markdown).toMatch(/\| ebcc\/native \| persistent \| x \| 300 \| 1\.210 \| 1\.420 \|/);
    expect(markdown).toMatch(/\| phase persistent \| execute \| ms \| 300 \| +\| +\| 0\.810 \| 1\.700 \|/);
    expect(markdown).toMatch(/\| invocations\/s \| persistent \| 1\/s \| 5 \| 812 \| 2345 \| 2345 \|/);
    expect(markdown).toMatch(/\| invocations\/s \| oneshot \| 1\/s \| 5 \| 31\.50 \| 44\.25 \| +\|/);
    // The runs table names each run with its load average.
    expect(markdown).toContain(
      '| throughput | fixture-2 | 2026-11-25 06:10 | `abc1234` | 2× Fixture CPU | 1.10 → 1.90 |',
    );
    // Targets: judged where measured, "not measured" (no number) where not.
    expect(markdown).toMatch(/p50 ratio \| ≤ 1\.10× \| 1\.210 x \(run fixture-1\) \| \*\*MISS\*\*/);
    expect(markdown).toMatch(/Same, p99 ratio \| ≤ 1\.5× \| 1\.420 x \(run fixture-1\) \| \*\*PASS\*\*/);
    expect(markdown).toMatch(
      /best client count \| ≥ 2,000\/s \| 2345 1\/s \(run fixture-2\) \| \*\*PASS\*\*/,
    );
    expect(markdown).toMatch(/Cold start with `sim`.*\| not measured \| – \|/);
    expect(markdown).toContain('_Not measured: run `npm run bench -- --only=density`._');
    expect(markdown).toContain('_(plot "Memory per warm composite');
    // Two plots rendered as SVG, linked relative to the markdown.
    expect(plots.map((p) => p.slice(dir.length + 1)).sort()).toEqual([
      'bench/stage-phases.svg',
      'bench/throughput.svg',
    ]);
    expect(markdown).toContain('](bench/throughput.svg)');
    const svg = await readFile(join(dir, 'bench', 'throughput.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('invocations/s');
    expect(judgeTargets(rows).filter((t) => t.pass !== undefined)).toHaveLength(3);
  });

  it('round-trips the CSV, replaces only the benchmarks re-run, and refuses rows that are not numbers', () => {
    const rows = readCsv(FIXTURE);
    expect(parseCsv(formatCsv(rows))).toEqual(rows);
    const fresh = [{ ...rows[0]!, run_id: 'fixture-3', value: '1.05' }];
    const merged = mergeRows(rows, fresh);
    expect(merged.filter((r) => r.bench === 'stage')).toEqual(fresh);
    expect(merged.filter((r) => r.bench === 'throughput')).toHaveLength(5);
    const bad = formatCsv([{ ...rows[0]!, value: 'NaN' }]);
    expect(() => parseCsv(bad)).toThrow(/not a number/);
  });
});
