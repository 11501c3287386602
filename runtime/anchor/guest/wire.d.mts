export interface Frame<H = Record<string, unknown>> {
  header: H;
  body: Buffer;
}
export function encodeFrame(header: unknown, body?: Uint8Array): Buffer;
export class FrameReader {
  constructor(maxFrameBytes: number);
  push(chunk: Buffer): Frame[];
}
