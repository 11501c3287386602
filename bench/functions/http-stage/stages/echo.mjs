// A trivial persistent stage: parse the JSON request, answer JSON.
import { readAll, readFrames, writeFrame } from './frames.mjs';

function handle(request) {
  const body = JSON.parse(request.toString('utf8'));
  return Buffer.from(JSON.stringify({ n: body.n, echoed: true }));
}

if (process.env.EBCC_STAGE_MODE === 'persistent') {
  for await (const request of readFrames(process.stdin)) writeFrame(process.stdout, handle(request));
} else {
  process.stdout.write(handle(await readAll(process.stdin)));
}
