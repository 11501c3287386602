// Helpers for the invocation-failure tests: composites built from inline sources, deployed to a real
// gateway, and invoked over loopback HTTP.
import { join } from 'node:path';
import { expect } from 'vitest';
import { packFiles, type PackFilesInput } from '../../runtime/bundle/pack.ts';
import { tempDir, upload, type TestGateway } from './env.ts';

export interface StageSpec {
  name: string;
  mode?: 'oneshot' | 'persistent';
  backend?: string;
  image: Record<string, unknown>;
  limits?: Record<string, number>;
  requestSchema?: Record<string, unknown>;
}

export interface CompositeSpec {
  name: string;
  version?: string;
  /** The anchor module's source (anchor.mjs). */
  anchor: string;
  anchorLimits?: { memoryMb?: number; cpuMs?: number; timeoutMs?: number };
  network?: string[];
  stages?: StageSpec[];
  pool?: Record<string, unknown>;
  /** Further bundle files (stage code), by path. */
  files?: PackFilesInput;
}

/** A stage that echoes its request (oneshot: stdin to stdout). */
export const ECHO_STAGE: StageSpec = {
  name: 'echo',
  image: { kind: 'script', interpreter: 'sh', entry: 'stages/echo.sh' },
};
const ECHO_FILES: PackFilesInput = { 'stages/echo.sh': 'exec cat\n' };

/** Builds, packs and uploads a composite; expects it deployed (201) and returns the response body. */
export async function deployComposite(gw: TestGateway, token: string, spec: CompositeSpec): Promise<any> {
  const result = await uploadComposite(gw, token, spec);
  expect(result.status, JSON.stringify(result.body)).toBe(201);
  return result.body;
}

/** Builds, packs and uploads a composite; returns the gateway's answer whatever it is. */
export async function uploadComposite(
  gw: TestGateway,
  token: string,
  spec: CompositeSpec,
): Promise<{ status: number; body: any }> {
  const stages = spec.stages ?? [ECHO_STAGE];
  const manifest = {
    schemaVersion: 1,
    name: spec.name,
    version: spec.version ?? '1.0.0',
    anchor: {
      entry: 'anchor.mjs',
      limits: spec.anchorLimits ?? {},
      network: { allow: spec.network ?? [] },
    },
    stages,
    pool: { minWarm: 0, maxInstances: 2, ...spec.pool },
  };
  const files: PackFilesInput = {
    'composite.json': JSON.stringify(manifest, null, 2),
    'anchor.mjs': spec.anchor,
    ...(spec.stages ? {} : ECHO_FILES),
    ...spec.files,
  };
  const out = join(await tempDir('ebcc-bundle-'), 'bundle.tgz');
  await packFiles(files, out);
  return upload(gw.url, token, out);
}

function parseJson(text: string): any {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

export interface CallResult {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

/** One HTTP invocation of `/fn/<name><path>`. */
export async function callFn(
  gw: TestGateway,
  token: string,
  name: string,
  init: {
    path?: string;
    method?: string;
    body?: string | Uint8Array<ArrayBuffer>;
    headers?: Record<string, string>;
  } = {},
): Promise<CallResult> {
  const response = await fetch(`${gw.url}/fn/${name}${init.path ?? '/'}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { authorization: `Bearer ${token}`, ...init.headers },
    body: init.body,
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: parseJson(text) };
}

/**
 * Asserts an RFC 9457 problem document with this status and `urn:ebcc:problem:<slug>` type, tagged with
 * the invocation id (header and body) when `invocation` is true. Returns the document.
 */
export function expectProblem(result: CallResult, status: number, slug: string, invocation = true): any {
  expect(result.status, result.text).toBe(status);
  expect(result.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(result.body).toMatchObject({ type: `urn:ebcc:problem:${slug}`, status });
  expect(typeof result.body.title).toBe('string');
  if (invocation) {
    const id = result.headers.get('x-ebcc-invocation');
    expect(id).toMatch(/^inv_[0-9a-z]+$/);
    expect(result.body.invocationId).toBe(id);
  }
  return result.body;
}

/** Polls the instance list until an instance of `fn` is serving an invocation; returns its CID. */
export async function busyInstance(gw: TestGateway, token: string, fn: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const response = await fetch(`${gw.url}/v1/instances`, { headers: { authorization: `Bearer ${token}` } });
    const { instances } = (await response.json()) as { instances: any[] };
    const busy = instances.find(
      (s) => s.annotations['ebcc.function'] === fn && Number(s.annotations['ebcc.inflight']) > 0,
    );
    if (busy) return busy.id as string;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no instance of ${fn} became busy`);
}

export async function invocationRecord(gw: TestGateway, token: string, id: string): Promise<any> {
  const response = await fetch(`${gw.url}/v1/invocations/${id}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(response.status).toBe(200);
  return response.json();
}

/** A function that always answers; used to show that the gateway is unharmed after a failure. */
export const HEALTHY_ANCHOR = `
export default {
  async fetch(request, env) {
    const reply = await env.stages.echo.invoke('ping');
    return Response.json({ ok: true, echoed: await reply.text(), eid: reply.eid });
  },
};
`;

export async function expectHealthy(gw: TestGateway, token: string, name: string): Promise<void> {
  const result = await callFn(gw, token, name);
  expect(result.status, result.text).toBe(200);
  expect(result.body).toMatchObject({ ok: true, echoed: 'ping' });
  expect(result.headers.get('x-ebcc-invocation')).toMatch(/^inv_/);
}
