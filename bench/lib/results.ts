/**
 * The suite's machine-readable results: one row per measured quantity (a statistic of one variant of one
 * quantity of one benchmark), with its unit, the run it came from and the load average around the
 * benchmark that measured it. docs/benchmarks.md and its plots are generated from these rows alone.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { quantile } from './stats.ts';

export const COLUMNS = [
  'run_id',
  'bench',
  'quantity',
  'variant',
  'stat',
  'value',
  'unit',
  'n',
  'load_start',
  'load_end',
  'measured_at',
  'commit',
  'machine',
] as const;

export type Column = (typeof COLUMNS)[number];
export type Row = Record<Column, string>;

export interface RowInput {
  quantity: string;
  variant?: string;
  stat: string;
  value: number;
  unit: string;
  /** How many samples the statistic was taken over (1 for a single measurement). */
  n: number;
}

/** The statistics a latency distribution is reported with. */
export const DISTRIBUTION_STATS = [
  ['min', 0],
  ['p50', 0.5],
  ['p90', 0.9],
  ['p99', 0.99],
  ['p99.9', 0.999],
  ['max', 1],
] as const;

const load1 = () => os.loadavg()[0]!.toFixed(2);

/** The rows of one benchmark: their load average is taken when it starts and when its rows are closed. */
export class BenchRecorder {
  private readonly pending: RowInput[] = [];
  private readonly loadStart = load1();
  private readonly startedAt = new Date().toISOString();

  constructor(readonly bench: string) {}

  add(row: RowInput): void {
    if (!Number.isFinite(row.value))
      throw new Error(
        `${this.bench}: ${row.quantity}/${row.variant ?? ''} ${row.stat} is ${row.value}, not a measurement`,
      );
    if (!Number.isInteger(row.n) || row.n < 1)
      throw new Error(`${this.bench}: ${row.quantity} ${row.stat} was taken over ${row.n} samples`);
    this.pending.push(row);
  }

  /** min, p50, p90, p99, p99.9 and max of the samples; refuses an empty or non-finite sample set. */
  distribution(quantity: string, variant: string, samples: readonly number[], unit: string): void {
    for (const [stat, q] of DISTRIBUTION_STATS)
      this.add({
        quantity,
        variant,
        stat,
        value: quantile(samples, q, `${this.bench} ${quantity} ${variant}`),
        unit,
        n: samples.length,
      });
  }

  close(runId: string, meta: { commit: string; machine: string }): Row[] {
    if (this.pending.length === 0) throw new Error(`benchmark ${this.bench} measured nothing`);
    const loadEnd = load1();
    return this.pending.map((r) => ({
      run_id: runId,
      bench: this.bench,
      quantity: r.quantity,
      variant: r.variant ?? '',
      stat: r.stat,
      value: String(+r.value.toPrecision(6)),
      unit: r.unit,
      n: String(r.n),
      load_start: this.loadStart,
      load_end: loadEnd,
      measured_at: this.startedAt,
      commit: meta.commit,
      machine: meta.machine,
    }));
  }
}

const cell = (v: string): string => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

export function formatCsv(rows: readonly Row[]): string {
  return [COLUMNS.join(','), ...rows.map((r) => COLUMNS.map((c) => cell(r[c])).join(','))].join('\n') + '\n';
}

/** RFC 4180 with a header of exactly COLUMNS; throws on anything else. */
export function parseCsv(text: string, source = 'CSV'): Row[] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      record.push(field);
      field = '';
    } else if (c === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
    } else if (c !== '\r') field += c;
  }
  if (quoted) throw new Error(`${source}: unterminated quoted field`);
  if (field !== '' || record.length) records.push([...record, field]);
  const [header, ...body] = records;
  if (!header || header.join(',') !== COLUMNS.join(','))
    throw new Error(`${source}: the header is not ${COLUMNS.join(',')}`);
  return body.map((cells, i) => {
    if (cells.length !== COLUMNS.length)
      throw new Error(`${source}: row ${i + 2} has ${cells.length} cells, not ${COLUMNS.length}`);
    const row = Object.fromEntries(COLUMNS.map((c, j) => [c, cells[j]!])) as Row;
    if (!Number.isFinite(Number(row.value)) || row.value === '')
      throw new Error(`${source}: row ${i + 2} has the value "${row.value}", not a number`);
    return row;
  });
}

export function readCsv(path: string): Row[] {
  return parseCsv(readFileSync(path, 'utf8'), path);
}

export async function writeResultsCsv(path: string, rows: readonly Row[]): Promise<void> {
  await writeFile(path, formatCsv(rows));
}

/** The rows of the benchmarks just run replace those of the same benchmarks; the others are kept. */
export function mergeRows(previous: readonly Row[], fresh: readonly Row[]): Row[] {
  const replaced = new Set(fresh.map((r) => r.bench));
  return [...previous.filter((r) => !replaced.has(r.bench)), ...fresh];
}
