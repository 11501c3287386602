// The anchor wire: frames of [u32 frame length][u32 header length][header JSON][body bytes], so that
// bodies travel as raw bytes next to a small JSON header and are never re-encoded.

export function encodeFrame(header, body) {
  const json = Buffer.from(JSON.stringify(header));
  const bodyLength = body ? body.byteLength : 0;
  const frame = Buffer.allocUnsafe(8 + json.length + bodyLength);
  frame.writeUInt32BE(4 + json.length + bodyLength, 0);
  frame.writeUInt32BE(json.length, 4);
  json.copy(frame, 8);
  if (body) frame.set(body, 8 + json.length);
  return frame;
}

export class FrameReader {
  constructor(maxFrameBytes) {
    this.maxFrameBytes = maxFrameBytes;
    this.chunks = [];
    this.buffered = 0;
  }

  /** Adds bytes and returns every complete frame as { header, body }. */
  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames = [];
    while (this.buffered >= 4) {
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length > this.maxFrameBytes || length < 4)
        throw new Error(`anchor wire: bad frame length ${length}`);
      if (this.buffered < 4 + length) break;
      const frame = this.take(4 + length);
      const headerLength = frame.readUInt32BE(4);
      if (headerLength > length - 4) throw new Error('anchor wire: bad header length');
      const header = JSON.parse(frame.toString('utf8', 8, 8 + headerLength));
      // Every reader dispatches on header fields: `null`, a number or an array must not get that far.
      if (header === null || typeof header !== 'object' || Array.isArray(header))
        throw new Error('anchor wire: the header is not a JSON object');
      frames.push({ header, body: frame.subarray(8 + headerLength) });
    }
    return frames;
  }

  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  take(n) {
    const joined = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = joined.length > n ? [joined.subarray(n)] : [];
    this.buffered -= n;
    return joined.subarray(0, n);
  }
}
