import { Decoder, Encoder } from 'cbor-x';
import { EvidenceFormatError } from './errors.ts';

/**
 * Deterministic CBOR (RFC 8949 section 4.2.1, "core deterministic encoding") for the few types evidence
 * uses: unsigned and negative integers, byte and text strings, arrays, maps with pre-sorted keys,
 * booleans and null. cbor-x always writes the shortest argument for lengths and integers up to 2^32-1;
 * larger integers are passed as BigInt so that it does not fall back to a float.
 */
export type CborValue = number | bigint | string | boolean | null | Uint8Array | CborValue[] | CborMap;
export type CborMap = Map<CborValue, CborValue>;

const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: false,
  tagUint8Array: false,
  variableMapSize: true,
  pack: false,
  structuredClone: false,
});

const decoder = new Decoder({
  useRecords: false,
  mapsAsObjects: false,
  copyBuffers: true,
  structuredClone: false,
});

function prepare(value: CborValue): unknown {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new EvidenceFormatError('cbor', `not an integer: ${value}`);
    return value > 0xffffffff || value < -0x100000000 ? BigInt(value) : value;
  }
  if (value instanceof Uint8Array) return Buffer.isBuffer(value) ? value : Buffer.from(value);
  if (Array.isArray(value)) return value.map(prepare);
  if (value instanceof Map) return sortedMap([...value.entries()]);
  return value;
}

/** Order two map keys as RFC 8949 core deterministic encoding does: bytewise over their encodings. */
function compareKeys(a: CborValue, b: CborValue): number {
  if (typeof a === 'number' && typeof b === 'number') {
    // For integers the bytewise order of the encodings is: all non-negative ascending, then all negative
    // descending (-1, -2, ...), because major type 0 sorts before major type 1 and a longer argument has a
    // larger initial byte.
    if (a >= 0 && b >= 0) return a - b;
    if (a < 0 && b < 0) return b - a;
    return a >= 0 ? -1 : 1;
  }
  return Buffer.compare(encoder.encode(prepare(a)), encoder.encode(prepare(b)));
}

function sortedMap(entries: [CborValue, CborValue][]): Map<unknown, unknown> {
  entries.sort(([a], [b]) => compareKeys(a, b));
  for (let i = 1; i < entries.length; i++) {
    if (compareKeys(entries[i - 1]![0], entries[i]![0]) === 0) {
      throw new EvidenceFormatError('cbor', 'duplicate map key');
    }
  }
  return new Map(entries.map(([k, v]) => [prepare(k), prepare(v)]));
}

/** Encode deterministically (maps are re-sorted; floats are refused). */
export function encodeDeterministic(value: CborValue): Buffer {
  return Buffer.from(encoder.encode(prepare(value)));
}

/**
 * Fast path for a map with integer keys that the caller already lists in canonical order (the claims
 * set): the order is asserted, not sorted.
 */
export function encodeIntKeyMap(entries: [number, CborValue][]): Buffer {
  const map = new Map<unknown, unknown>();
  let previous: number | undefined;
  for (const [key, value] of entries) {
    if (previous !== undefined && compareKeys(previous, key) >= 0) {
      throw new EvidenceFormatError('cbor', `map keys out of canonical order at ${key}`);
    }
    previous = key;
    map.set(key, prepare(value));
  }
  return Buffer.from(encoder.encode(map));
}

/**
 * Decode one CBOR item. Any failure (truncation, trailing bytes, unsupported items) becomes an
 * `EvidenceFormatError`; callers then re-encode what they understood and compare bytes, which rejects
 * every non-deterministic encoding.
 */
export function decodeCbor(bytes: Uint8Array, what: string): unknown {
  try {
    // A fresh view: cbor-x caches a DataView on the object it decodes, and callers' buffers stay untouched.
    return decoder.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (error) {
    throw new EvidenceFormatError('cbor', `${what}: malformed CBOR (${(error as Error).message})`);
  }
}

/** Normalise a decoded integer (cbor-x yields BigInt for 8-byte arguments) to a safe number, or undefined. */
export function asInteger(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? value : undefined;
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
      ? Number(value)
      : undefined;
  }
  return undefined;
}
