/**
 * The shim's reader of a persistent stage's stdout: frames of [u32 big-endian length][payload], the format
 * of functions' `frames.mjs`. The stage is untrusted, so a declared length over the caller's cap is
 * reported before any of it is buffered, and chunks are joined only once a whole frame is there.
 */
export type StageFrameEvent = { kind: 'frame'; payload: Buffer } | { kind: 'oversized'; length: number };

export class StageFrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = 4;

  /** Bytes held back waiting for the rest of a frame. */
  get pending(): number {
    return this.buffered;
  }

  /** Adds a chunk and returns every complete frame in it, in order; stops at the first oversized one. */
  push(chunk: Buffer, maxPayloadBytes: number): StageFrameEvent[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const events: StageFrameEvent[] = [];
    while (this.buffered >= this.need) {
      const buffer = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      const length = buffer.readUInt32BE(0);
      if (length > maxPayloadBytes) {
        this.chunks = [buffer];
        events.push({ kind: 'oversized', length });
        return events;
      }
      if (buffer.length < 4 + length) {
        this.chunks = [buffer];
        this.need = 4 + length;
        break;
      }
      events.push({ kind: 'frame', payload: buffer.subarray(4, 4 + length) });
      const rest = buffer.subarray(4 + length);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
      this.need = 4;
    }
    return events;
  }
}
