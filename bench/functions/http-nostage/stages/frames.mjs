// Length-prefixed framing for persistent stages: each message is a 4-byte big-endian length, then
// that many bytes. Oneshot stages read all of stdin and write all of stdout instead.

/** Larger than any request the runtime sends (a stage's maxRequestBytes is at most 64 MiB). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/**
 * Yields each frame's payload. Chunks are only joined once a whole frame is there, so a frame cut into
 * many small chunks costs linear time; a length over `maxFrameBytes`, or a stream that ends inside a
 * frame, is an error.
 */
export async function* readFrames(stream, maxFrameBytes = MAX_FRAME_BYTES) {
  let chunks = [];
  let buffered = 0;
  let need = 4;
  for await (const chunk of stream) {
    chunks.push(chunk);
    buffered += chunk.length;
    while (buffered >= need) {
      let buffer = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      const length = buffer.readUInt32BE(0);
      if (length > maxFrameBytes) throw new Error(`frames: a ${length}-byte frame exceeds ${maxFrameBytes}`);
      if (buffer.length < 4 + length) {
        chunks = [buffer];
        need = 4 + length;
        break;
      }
      yield buffer.subarray(4, 4 + length);
      buffer = buffer.subarray(4 + length);
      chunks = buffer.length ? [buffer] : [];
      buffered = buffer.length;
      need = 4;
    }
  }
  if (buffered > 0) throw new Error(`frames: the stream ended inside a frame (${buffered} bytes left)`);
}

export function writeFrame(stream, payload) {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  stream.write(Buffer.concat([header, payload]));
}

export async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}
