import type { Config } from '../config.ts';
import { IsolateAnchorExecutor } from './isolate-executor.ts';
import { ProcessAnchorExecutor } from './process-executor.ts';
import type { AnchorExecutor } from './types.ts';

/** The executor the configuration names (EBCC_ANCHOR_EXECUTOR): `process` unless `isolate` is asked for. */
export function anchorExecutor(config: Pick<Config, 'anchorExecutor' | 'isolatesPerHost'>): AnchorExecutor {
  return config.anchorExecutor === 'isolate'
    ? new IsolateAnchorExecutor({ anchorsPerHost: config.isolatesPerHost })
    : new ProcessAnchorExecutor();
}
