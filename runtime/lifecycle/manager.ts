import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { findFunction, findVersion } from '../../db/queries/functions.ts';
import {
  enclavesOf,
  instanceRow,
  listInstances,
  markEnclavesDestroyed,
  unstoppedOnHost,
} from '../../db/queries/instances.ts';
import { instances } from '../../db/schema.ts';
import type { AnchorExecutor } from '../anchor/types.ts';
import { AnchorLoadError } from '../anchor/types.ts';
import type { GroupCommitter } from '../artifacts/group-commit.ts';
import { newId } from '../ids.ts';
import type { Logger } from '../log.ts';
import { conflict, notFound, Problem } from '../problem.ts';
import { loadVersion } from '../registry/versions.ts';
import { KeyReleaseService } from '../keyrelease/service.ts';
import { SEALABLE_ARTIFACTS } from '../artifacts/sealing.ts';
import type { DataKeyring } from '../keys/data-keys.ts';
import { InstanceStages, StageError, type StageBinding } from '../stages/dispatcher.ts';
import type { EidAllocator } from '../stages/eid-allocator.ts';
import { compileRequestSchema } from '../stages/request-schema.ts';
import { exitStatusOf, LiveInstance, stopReasonOf, type StopRecord } from './instance.ts';
import { KeyedMutex } from './keyed-mutex.ts';
import { OCI_VERSION, transitionError, type OciState } from './oci.ts';

export interface LifecycleDeps {
  db: Db;
  committer: GroupCommitter;
  eids: EidAllocator;
  executor: AnchorExecutor;
  home: string;
  /** This node's identity; instances are host-local and recorded under it. */
  hostId: string;
  logger: Logger;
  /** Tenant data keys: stage artifacts are sealed at rest with them. */
  keyring: DataKeyring;
}

export interface CreateOptions {
  tenantId: string;
  functionName: string;
  version?: string;
  /** Pins the exact version row (the router's choice), whatever the active pointer says meanwhile. */
  versionId?: string;
  managedBy?: 'pool' | 'operator';
  annotations?: Record<string, string>;
}

type StatusListener = (instance: LiveInstance) => void;

const signals = constants.signals as Record<string, number>;
const VALID_SIGNALS = new Set(Object.keys(signals));

/**
 * The composite lifecycle with OCI runtime semantics: create, start, state, kill, delete and wait, with
 * every state change persisted in libSQL. Operations on one CID are serialized.
 */
export class CompositeManager {
  readonly live = new Map<string, LiveInstance>();
  private readonly mutex = new KeyedMutex();
  private readonly listeners = new Set<StatusListener>();
  private readonly requestedStops = new Map<string, string>();

  constructor(private readonly deps: LifecycleDeps) {}

  onStatusChange(listener: StatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(instance: LiveInstance): void {
    for (const listener of this.listeners) listener(instance);
  }

  private async persist(cid: string, values: Partial<typeof instances.$inferInsert>): Promise<void> {
    await this.deps.committer.submit((tx) => tx.update(instances).set(values).where(eq(instances.cid, cid)));
  }

  async create(options: CreateOptions): Promise<LiveInstance> {
    const { db, home, hostId } = this.deps;
    const fn = await findFunction(db, options.functionName);
    if (!fn || fn.tenantId !== options.tenantId) throw notFound(`function "${options.functionName}"`);
    const versionRow = options.version ? await findVersion(db, fn.id, options.version) : undefined;
    if (options.version && !versionRow)
      throw notFound(`version "${options.version}" of function "${fn.name}"`);
    const versionId = options.versionId ?? versionRow?.id ?? fn.activeVersionId;
    if (!versionId) throw conflict('no-active-version', `function "${fn.name}" has no active version`);
    const loaded = await loadVersion(db, home, versionId);
    if (!loaded) throw notFound(`version of function "${fn.name}"`);

    const cid = newId('c');
    const bindings = new Map<string, StageBinding>(
      loaded.stages.map((image) => {
        const stage = loaded.manifest.stages.find((s) => s.name === image.name)!;
        const publicArtifacts = new Set<string>(stage.confidentiality.public);
        const atRest = {
          artifacts: new Set(SEALABLE_ARTIFACTS.filter((a) => !publicArtifacts.has(a))),
          dataKey: () => this.deps.keyring.activeKey(fn.tenantId),
        };
        return [
          image.name,
          { image, validate: compileRequestSchema(stage.requestSchema), sealing: stage.sealing, atRest },
        ];
      }),
    );
    const keyRelease = new KeyReleaseService(db);
    const stages = new InstanceStages(
      cid,
      { function: fn.name, versionDigest: loaded.row.versionDigest },
      bindings,
      this.deps.eids,
      this.deps.committer,
      undefined,
      (enclave) =>
        keyRelease.releaseTo(
          fn.id,
          enclave,
          loaded.manifest.stages.find((s) => s.name === enclave.handle.stage)?.secrets ?? [],
        ),
    );
    const instance = new LiveInstance(
      cid,
      fn.tenantId,
      fn.id,
      fn.name,
      loaded,
      stages,
      options.managedBy ?? 'operator',
    );
    const annotations = {
      'ebcc.function': fn.name,
      'ebcc.version': loaded.row.version,
      'ebcc.versionDigest': loaded.row.versionDigest,
      'ebcc.managedBy': instance.managedBy,
      'ebcc.anchorExecutor': this.deps.executor.name,
      'ebcc.supervisorPid': String(process.pid),
      ...options.annotations,
    };
    await this.deps.committer.submit((tx) =>
      tx.insert(instances).values({
        cid,
        tenantId: fn.tenantId,
        functionId: fn.id,
        versionId,
        status: 'creating',
        hostId,
        bundlePath: loaded.rootDir,
        annotations,
      }),
    );
    this.live.set(cid, instance);
    return this.mutex.run(cid, async () => {
      try {
        const { manifest } = loaded;
        // Both sides are waited for even when one fails, so that the cleanup below finds everything the
        // other made: an enclave finished after the cleanup would outlive its instance.
        const [launched, prepared] = await Promise.allSettled([
          this.deps.executor.launch({
            cid,
            rootDir: loaded.rootDir,
            entry: manifest.anchor.entry,
            vars: manifest.anchor.vars,
            stageNames: manifest.stages.map((s) => s.name),
            limits: manifest.anchor.limits,
            networkAllow: manifest.anchor.network.allow,
          }),
          stages.prepare(),
        ]);
        if (launched.status === 'fulfilled') instance.anchor = launched.value;
        if (launched.status === 'rejected') throw launched.reason;
        if (prepared.status === 'rejected') throw prepared.reason;
      } catch (error) {
        // No half-made instance: whatever was made is destroyed and the record removed.
        instance.anchor?.kill();
        await stages.destroy();
        this.live.delete(cid);
        await this.deps.committer.submit((tx) => tx.delete(instances).where(eq(instances.cid, cid)));
        // A forced delete that came while this was being made waits for the instance to stop.
        instance.stop({ exitStatus: null, reason: `creation failed: ${(error as Error).message}` });
        if (error instanceof AnchorLoadError && error.transient)
          throw new Problem(503, 'anchor-start-failed', 'Anchor failed to start', error.message, {
            retryAfter: 1,
          });
        if (error instanceof AnchorLoadError)
          throw new Problem(422, 'anchor-load-failed', 'Anchor failed to load', error.message);
        if (error instanceof StageError)
          throw new Problem(
            error.status as 503,
            `stage-${error.code}`,
            'Stage enclave creation failed',
            error.message,
          );
        throw error;
      }
      const anchor = instance.anchor!;
      void anchor.exited.then((exit) =>
        this.mutex.run(cid, async () => {
          const requested = this.requestedStops.get(cid);
          this.requestedStops.delete(cid);
          await this.markStopped(instance, {
            exitStatus: exitStatusOf(exit, signals),
            reason: stopReasonOf(exit, requested),
          });
        }),
      );
      instance.status = 'created';
      await this.persist(cid, {
        status: 'created',
        pid: anchor.pid ?? null,
        annotations: { ...annotations, 'ebcc.enclaves': JSON.stringify(stages.enclaveIds()) },
      });
      this.notify(instance);
      return instance;
    });
  }

  private async markStopped(instance: LiveInstance, record: StopRecord): Promise<void> {
    if (instance.status === 'stopped') return;
    instance.stages.abort();
    instance.stop(record);
    this.deps.logger.info({ cid: instance.cid, fn: instance.functionName, ...record }, 'instance stopped');
    await this.persist(instance.cid, {
      status: 'stopped',
      exitStatus: record.exitStatus,
      stopReason: record.reason,
      stoppedAt: Date.now(),
    });
    this.notify(instance);
  }

  async start(cid: string, tenantId: string): Promise<LiveInstance> {
    return this.mutex.run(cid, async () => {
      const instance = await this.ownedOrRemote(cid, tenantId);
      const refused = transitionError('start', cid, instance.status);
      if (refused) throw conflict('invalid-transition', refused);
      instance.anchor!.start();
      instance.status = 'running';
      await this.persist(cid, { status: 'running', startedAt: Date.now() });
      this.notify(instance);
      return instance;
    });
  }

  /** A record in the database but not live here is on another node, or a leftover of a previous run. */
  private async ownedOrRemote(cid: string, tenantId: string): Promise<LiveInstance> {
    const instance = this.live.get(cid);
    if (instance && instance.tenantId === tenantId) return instance;
    const row = await instanceRow(this.deps.db, cid);
    if (!row || row.instance.tenantId !== tenantId) throw notFound(`instance ${cid}`);
    if (row.instance.status === 'stopped') {
      throw conflict('invalid-transition', `instance ${cid} is stopped; delete it`);
    }
    throw new Problem(
      409,
      'instance-elsewhere',
      'Conflict',
      `instance ${cid} lives on node ${row.instance.hostId}; manage it there`,
    );
  }

  async kill(cid: string, tenantId: string, signal = 'SIGTERM'): Promise<void> {
    const name = signal.startsWith('SIG') ? signal : `SIG${signal}`;
    if (!VALID_SIGNALS.has(name))
      throw new Problem(400, 'invalid-signal', 'Bad request', `unknown signal "${signal}"`);
    const instance = await this.mutex.run(cid, async () => {
      const live = await this.ownedOrRemote(cid, tenantId);
      const refused = transitionError('kill', cid, live.status);
      if (refused) throw conflict('invalid-transition', refused);
      this.requestedStops.set(cid, `killed by ${name}`);
      live.stages.abort();
      live.anchor!.kill(name as NodeJS.Signals);
      return live;
    });
    // Give the exit a moment to be recorded, so that `state` right after `kill` tells the truth.
    await Promise.race([instance.stopped, new Promise((r) => setTimeout(r, 2000))]);
  }

  async delete(cid: string, tenantId: string, force = false): Promise<void> {
    const instance = this.live.get(cid);
    if (instance && instance.tenantId === tenantId) {
      if (instance.status !== 'stopped') {
        if (!force) throw conflict('invalid-transition', transitionError('delete', cid, instance.status)!);
        this.requestedStops.set(cid, 'deleted with force');
        instance.stages.abort();
        instance.anchor?.kill('SIGKILL');
        await instance.stopped;
      }
      await this.mutex.run(cid, async () => {
        await instance.stages.destroy();
        this.live.delete(cid);
        await this.deps.committer.submit((tx) => tx.delete(instances).where(eq(instances.cid, cid)));
        this.notify(instance);
      });
      return;
    }
    const row = await instanceRow(this.deps.db, cid);
    if (!row || row.instance.tenantId !== tenantId) throw notFound(`instance ${cid}`);
    if (row.instance.status !== 'stopped') {
      throw new Problem(
        409,
        'instance-elsewhere',
        'Conflict',
        `instance ${cid} lives on node ${row.instance.hostId}; delete it there`,
      );
    }
    await markEnclavesDestroyed(this.deps.db, [cid]);
    await this.deps.committer.submit((tx) => tx.delete(instances).where(eq(instances.cid, cid)));
  }

  /** Force-deletes every instance of a function that lives on this node (the function is going away). */
  async deleteAllOf(functionId: string): Promise<void> {
    const doomed = [...this.live.values()].filter((i) => i.functionId === functionId);
    await Promise.all(doomed.map((i) => this.delete(i.cid, i.tenantId, true)));
  }

  /** Blocks until the instance stops (or the timeout passes), and returns its exit status. */
  async wait(
    cid: string,
    tenantId: string,
    timeoutMs: number,
  ): Promise<{ status: string; exitStatus: number | null; reason: string | null }> {
    const instance = this.live.get(cid);
    if (instance && instance.tenantId === tenantId) {
      const record = await Promise.race([
        instance.stopped,
        new Promise<undefined>((r) => setTimeout(r, timeoutMs)),
      ]);
      if (record) return { status: 'stopped', exitStatus: record.exitStatus, reason: record.reason };
      return { status: instance.status, exitStatus: null, reason: null };
    }
    const row = await instanceRow(this.deps.db, cid);
    if (!row || row.instance.tenantId !== tenantId) throw notFound(`instance ${cid}`);
    return {
      status: row.instance.status,
      exitStatus: row.instance.exitStatus,
      reason: row.instance.stopReason,
    };
  }

  async state(cid: string, tenantId: string): Promise<OciState> {
    await this.deps.committer.flush();
    const row = await instanceRow(this.deps.db, cid);
    if (!row || row.instance.tenantId !== tenantId) throw notFound(`instance ${cid}`);
    return this.toOci(row, await enclavesOf(this.deps.db, cid));
  }

  async list(tenantId: string): Promise<OciState[]> {
    await this.deps.committer.flush();
    const rows = await listInstances(this.deps.db, tenantId);
    return Promise.all(
      rows.map(async (row) => this.toOci(row, await enclavesOf(this.deps.db, row.instance.cid))),
    );
  }

  private toOci(
    row: NonNullable<Awaited<ReturnType<typeof instanceRow>>>,
    enclaves: Awaited<ReturnType<typeof enclavesOf>>,
  ): OciState {
    const i = row.instance;
    const live = this.live.get(i.cid);
    const annotations: Record<string, string> = {
      ...i.annotations,
      'ebcc.host': i.hostId,
      'ebcc.createdAt': new Date(i.createdAt).toISOString(),
      'ebcc.enclaves': JSON.stringify(
        enclaves.map((e) => ({
          eid: e.eid,
          stage: e.stage,
          backend: e.backend,
          measurement: `${e.measurementAlg}:${e.measurement}`,
          destroyed: e.destroyedAt !== null,
        })),
      ),
    };
    if (i.startedAt) annotations['ebcc.startedAt'] = new Date(i.startedAt).toISOString();
    if (i.stoppedAt) annotations['ebcc.stoppedAt'] = new Date(i.stoppedAt).toISOString();
    if (i.stopReason) annotations['ebcc.stopReason'] = i.stopReason;
    if (i.exitStatus !== null) annotations['ebcc.exitStatus'] = String(i.exitStatus);
    if (live) annotations['ebcc.inflight'] = String(live.inflight);
    const state: OciState = {
      ociVersion: OCI_VERSION,
      id: i.cid,
      status: i.status,
      bundle: i.bundlePath,
      annotations,
    };
    if (i.pid !== null && (i.status === 'created' || i.status === 'running')) state.pid = i.pid;
    return state;
  }

  /**
   * After a restart: instances this node recorded but whose supervisor is gone cannot be reattached
   * (their anchors died with it). They are marked stopped, with the reason, and their enclaves destroyed.
   */
  async reconcile(): Promise<number> {
    const rows = await unstoppedOnHost(this.deps.db, this.deps.hostId);
    const orphaned = rows.filter(
      (r) => !this.live.has(r.cid) && !supervisorAlive(Number(r.annotations['ebcc.supervisorPid'])),
    );
    for (const row of orphaned) {
      if (row.pid) killQuietly(row.pid);
      await this.persist(row.cid, {
        status: 'stopped',
        stoppedAt: Date.now(),
        stopReason: `reconciled after restart: the supervisor (pid ${row.annotations['ebcc.supervisorPid'] ?? '?'}) and the anchor (pid ${row.pid ?? '?'}) are gone`,
      });
    }
    await markEnclavesDestroyed(
      this.deps.db,
      orphaned.map((r) => r.cid),
    );
    if (orphaned.length)
      this.deps.logger.warn({ count: orphaned.length }, 'reconciled instances of a previous run as stopped');
    return orphaned.length;
  }

  /** Stops every live instance (SIGTERM, then SIGKILL) and destroys their enclaves. */
  async shutdown(graceMs = 3000): Promise<void> {
    const all = [...this.live.values()];
    for (const i of all) {
      if (i.status !== 'stopped') {
        this.requestedStops.set(i.cid, 'the gateway shut down');
        i.anchor?.kill('SIGTERM');
      }
    }
    await Promise.race([Promise.all(all.map((i) => i.stopped)), new Promise((r) => setTimeout(r, graceMs))]);
    for (const i of all) if (i.status !== 'stopped') i.anchor?.kill('SIGKILL');
    await Promise.all(all.map((i) => i.stopped));
    await Promise.all(all.map((i) => i.stages.destroy()));
    await this.deps.committer.flush();
  }
}

function supervisorAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return /\0(serve|worker)(\0|$)/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
