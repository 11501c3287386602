// Length-prefixed framing for persistent stages: each message is a 4-byte big-endian length, then
// that many bytes. Oneshot stages read all of stdin and write all of stdout instead.
export async function* readFrames(stream) {
  let buffer = Buffer.alloc(0);
  for await (const chunk of stream) {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 4) {
      const length = buffer.readUInt32BE(0);
      if (buffer.length < 4 + length) break;
      yield buffer.subarray(4, 4 + length);
      buffer = buffer.subarray(4 + length);
    }
  }
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
