/**
 * The anchor executor boundary. The lifecycle asks an executor to launch an anchor and then talks to
 * it only through this interface, so denser executors (V8 isolates) or an OCI executor (runc) can
 * replace the sandboxed-process one.
 */

export interface AnchorSpec {
  cid: string;
  /** Local directory with the function version's files, shown read-only to the anchor. */
  rootDir: string;
  entry: string;
  vars: Record<string, string>;
  stageNames: string[];
  limits: { memoryMb: number; cpuMs: number; timeoutMs: number };
  networkAllow: string[];
}

export interface AnchorRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: Uint8Array;
}

export interface AnchorResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array;
}

export type StageReply =
  | { ok: true; stage: string; eid: number; seq: number; executionId: string; body: Uint8Array }
  | { ok: false; code: string; status: number; message: string; eid?: number };

export interface ConsoleLine {
  level: string;
  text: string;
}

export interface InvocationHooks {
  /** A stage call made by the anchor during this invocation. */
  stage(stage: string, body: Uint8Array, options: { nonce?: string }): Promise<StageReply>;
}

export type AnchorOutcome =
  | { kind: 'response'; response: AnchorResponse }
  | { kind: 'error'; message: string }
  | { kind: 'timeout'; message: string }
  | { kind: 'crashed'; message: string };

export interface AnchorInvocationResult {
  outcome: AnchorOutcome;
  /** Resolves when the invocation is fully over (its waitUntil work included), with its console. */
  finished: Promise<{ console: ConsoleLine[]; consoleTruncated: boolean; waitUntilErrors: string[] }>;
}

export interface AnchorExit {
  code: number | null;
  signal: string | null;
  reason: string;
  detail?: string;
}

export interface AnchorInstance {
  /** Host pid of the anchor's sandbox. */
  readonly pid: number | undefined;
  /** Begins serving; before this, the module is loaded but takes no invocations (OCI `created`). */
  start(): void;
  invoke(request: AnchorRequest, hooks: InvocationHooks): Promise<AnchorInvocationResult>;
  kill(signal?: NodeJS.Signals): void;
  readonly exited: Promise<AnchorExit>;
}

export interface AnchorExecutor {
  readonly name: string;
  /** Resolves once the anchor module is loaded and ready to start; rejects if it cannot load. */
  launch(spec: AnchorSpec): Promise<AnchorInstance>;
}

export class AnchorLoadError extends Error {
  constructor(
    message: string,
    /** The anchor was killed from outside while loading: not the tenant's fault, and worth a retry. */
    readonly transient = false,
  ) {
    super(message);
    this.name = 'AnchorLoadError';
  }
}
