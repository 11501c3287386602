/** Writes rows as RFC 4180 CSV. */
import { writeFile } from 'node:fs/promises';

type Cell = string | number | undefined | null;

const cell = (v: Cell): string => {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'number' ? String(+v.toFixed(6)) : v;
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export async function writeCsv(path: string, header: string[], rows: Cell[][]): Promise<void> {
  for (const row of rows)
    if (row.length !== header.length)
      throw new Error(`CSV ${path}: a row has ${row.length} cells, not ${header.length}`);
  await writeFile(path, [header, ...rows].map((r) => r.map(cell).join(',')).join('\n') + '\n');
}
