// A tiny raw ustar writer for tests: `tar` (rightly) refuses to create most hostile archives.
export interface RawEntry {
  name: string;
  /** typeflag, default '0' */
  type?: string;
  data?: Buffer | string;
  /** declared size; defaults to data length */
  size?: number;
  /** raw 12-byte size field, overrides `size` */
  sizeField?: Buffer;
  mode?: number;
  linkname?: string;
  prefix?: string;
  badChecksum?: boolean;
}

export const octal = (n: number, width: number): string => `${n.toString(8).padStart(width - 1, '0')}\0`;

export function rawHeader(e: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(e.name, 0, 100, 'utf8');
  h.write(octal(e.mode ?? 0o644, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  if (e.sizeField) e.sizeField.copy(h, 124, 0, 12);
  else h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii');
  h.fill(0x20, 148, 156);
  h.write(e.type ?? '0', 156, 'ascii');
  if (e.linkname) h.write(e.linkname, 157, 100, 'utf8');
  h.write('ustar\0' + '00', 257, 'binary');
  if (e.prefix) h.write(e.prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  if (e.badChecksum) sum += 1;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

export function rawEntry(e: RawEntry): Buffer {
  const data = typeof e.data === 'string' ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0));
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([rawHeader(e, e.size ?? data.length), data, pad]);
}

/** A PAX extended header ('x') or global header ('g') carrying the given records. */
export function paxEntry(records: Record<string, string>, type: 'x' | 'g' = 'x'): Buffer {
  const body = Object.entries(records)
    .map(([k, v]) => {
      const line = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(line) + 1;
      while (String(len).length + Buffer.byteLength(line) !== len) len++;
      return `${len}${line}`;
    })
    .join('');
  return rawEntry({ name: 'PaxHeader', type, data: body });
}

export const END = Buffer.alloc(1024);
export const tarOf = (...parts: (RawEntry | Buffer)[]): Buffer =>
  Buffer.concat([...parts.map((p) => (Buffer.isBuffer(p) ? p : rawEntry(p))), END]);
