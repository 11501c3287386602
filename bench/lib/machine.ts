/** What the numbers were measured on. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface MachineInfo {
  date: string;
  nproc: number;
  cpuModel: string;
  node: string;
  kernel: string;
  memoryGiB: number;
  loadAverageAtStart: number[];
  commit: string;
  dirtyFiles: number;
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim();
  if (!model) throw new Error('no "model name" in /proc/cpuinfo');
  const status = git(['status', '--porcelain']);
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpuModel: model,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    memoryGiB: +(os.totalmem() / 1024 ** 3).toFixed(1),
    loadAverageAtStart: os.loadavg().map((v) => +v.toFixed(2)),
    commit: git(['rev-parse', '--short', 'HEAD']) || 'unknown',
    dirtyFiles: status ? status.split('\n').length : 0,
  };
}
